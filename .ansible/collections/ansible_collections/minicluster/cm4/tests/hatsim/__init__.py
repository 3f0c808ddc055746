# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hatsim: a simulator of the miniature CM4 cluster hat (see /work/shared/hardware.md).

    python -m hatsim start --dir DIR [options]    daemon; returns once everything is ready
    python -m hatsim run --dir DIR [options]      the same in the foreground
    python -m hatsim stop --dir DIR               SIGTERM (SIGKILL after 5 s), then clean up
    python -m hatsim status --dir DIR

Files in DIR
    rp2040, console1..4     symlinks to pty slaves (RP2040 stock firmware console, node UARTs)
    i2c-1.sock              host I2C bus 1: INA226 0x40, EMC2301 0x2F, TMP117 0x48..0x4B, and the
                            24LC08 at 0x50..0x53 while the jumpers are fitted
    i2c-hub.sock            the hub's bus: the 24LC08 with jumpers, nothing without
    control.sock            JSON-lines control and inspection (hatsim.control lists the ops)
    rpiboot                 the fake rpiboot (hatsim.fake_rpiboot)
    emmc/node<N>.img        sparse eMMC backing files (kept across restarts)
    eeprom.bin              the 24LC08 contents (non-volatile: kept across restarts)
    state.json              the whole hat, rewritten atomically on every change
    sys/..., dev/...        fake sysfs and /dev for disk discovery (hatsim.fakesys)
    decoys/                 backing files of decoy disks (control op "decoys")
    hatsim.pid, hatsim.log

Behaviour worth knowing
    * The RP2040 console follows the stock firmware byte for byte (hatsim.rp2040). A pty with no
      program attached drops output, like USB CDC without DTR; bytes left unread when a program
      closes the port are flushed.
    * The SoC samples nRPIBOOT when it leaves reset: at power-on (EN rising) and at the end of an
      `r` pulse. A node in USB boot shows a USB device 0a5c:2711 at its path; rpiboot makes it run
      the payload and the disk appears disk_delay seconds later.
    * The disk goes away on power-off, on reset, and on the control op "unplug". If a process
      holds the backing file open at that moment, the eMMC image is re-created as a new inode
      with the same content (hatsim.disks): the writer's fd then points at an unlinked file, its
      later writes succeed but never reach the eMMC (as with a disk that is gone), and
      fstat(fd).st_nlink == 0 or the vanished sysfs/by-path entries tell it so. An open fd cannot
      be made to fail with EIO from user space; this is the closest honest equivalent.
    * "unplug" leaves the node powered but off the USB bus until its next power-on or reset.
    * The TMP117 on a card powers up with the hat (or when a card is put into an empty slot with
      "set"): its result reads 0x8000 for about 126 ms (eight averaged conversions, the default).
    * The EMC2301's software lock (0xEF bit 0) freezes its configuration registers until the
      simulator restarts; Fan Setting and TACH Target stay writable, as in the datasheet.
    * With --strict-hub, the nodes' USB works only while the hub is out of reset (jumpers removed)
      and runs a configuration from the EEPROM that swaps D+/D- on the node ports; by default USB
      boot works regardless and state.json's usb_hub just reports what the hub loaded.
"""

__version__ = '1.0.0'
