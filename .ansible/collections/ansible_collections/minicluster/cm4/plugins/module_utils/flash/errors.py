# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors of the image pipeline. Every message is one line an operator can act on."""

from __future__ import annotations


class FlashError(Exception):
    """Base of every error the pipeline raises on purpose."""


class SourceError(FlashError):
    """The image source cannot be read: missing, unsupported, corrupt or truncated."""


class BmapError(FlashError):
    """The .bmap file cannot be parsed, is inconsistent, or does not belong to the image."""


class ChecksumError(FlashError):
    """A digest did not match: the source's SHA-256, the bmap file's own checksum, a range's
    checksum, or the read-back of a target."""


class TargetError(FlashError):
    """A target cannot be used or failed: missing, too small, I/O error, gone."""
