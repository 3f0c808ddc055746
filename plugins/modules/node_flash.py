#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: node_flash
short_description: Reflash the eMMC of the cluster hat's CM4 nodes through rpiboot
version_added: 0.1.0
description:
  - For each node that needs it, powers the node into USB boot, runs C(rpiboot) with the mass-storage
    gadget for the node's own USB port, waits for the node's eMMC to appear as a disk, writes every such
    disk at once from one decompression stream (only the ranges the O(bmap) maps, when given), reads
    back and verifies what was written, customises the first boot (O(firstboot)), releases USB boot,
    power-cycles the node and, optionally, waits for a line on its console (O(wait_for)).
  - Accepts only a disk that hangs below the node's exact USB path, reports the CM4 gadget's SCSI
    model (C(mmcblk0), or vendor C(RPi-MSD-) for the legacy payload) and whose device node is what
    sysfs names. Never writes to any other disk.
  - Idempotent. The controller records per node what it wrote and verified (image identity, bmap digest,
    first-boot settings digest, when) under O(state_dir); a node whose record matches is left alone,
    not even power-cycled. O(force=true) reflashes anyway. The record is removed before a node is
    written and saved only once the node has been written, verified, customised and booted.
  - A node that fails at any step has USB boot released and is switched off; the task fails with one
    line per failed node in RV(msg); the other nodes carry on and are reported in RV(nodes).
  - Every option is checked before anything is touched; a refused input fails in one line and changes nothing.
  - One owner per node. While it works on a node the flash holds it (a lock and C(flash/node<N>.owner.json) under
    O(state_dir), naming the run); a second flash fails that node naming the run that holds it, and
    M(minicluster.cm4.node_power) refuses to switch it.
  - Stopping. On SIGTERM, SIGINT or SIGHUP, O(abort=true) from another run, or the O(watchdog), writing stops within
    one chunk, USB boot is released, the node is switched off and nothing is recorded as flashed. A guardian
    process does the same when the flash is killed outright; the next flash of that node reports it.
  - Long flashes are safe under C(async). While it runs, the module rewrites a small JSON progress file
    (O(progress_file)) with each node's step and bytes written, for a play to poll (the
    C(minicluster.cm4.reflash) role does).
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.hat
attributes:
  check_mode:
    support: full
    description: Reads the records and the image's identity and reports which nodes would be flashed; touches no node.
  diff_mode:
    support: full
    description: Shows, per node, the recorded image, bmap and first-boot digests before and after.
options:
  node:
    description:
      - One node to flash, 1 to 4. Mutually exclusive with O(nodes).
    type: int
  nodes:
    description:
      - Several nodes to flash, 1 to 4, all at once.
    type: list
    elements: int
  image:
    description:
      - The image on the controller. Raw C(.img), or compressed C(.xz), C(.gz), C(.bz2), C(.zst); streamed,
        never decompressed to disk.
      - Required unless O(abort=true). Before its first flash the image is read through once and checked (empty,
        corrupt, truncated, not matching its O(bmap)); a sound image is remembered by digest.
    type: path
  bmap:
    description:
      - The image's block map as C(bmaptool create) writes it (format 1.x or 2.0), for example the C(.bmap)
        that pi-gen publishes next to Raspberry Pi OS images.
      - Only the mapped ranges are written and verified; every range's SHA-256 and the bmap's own checksum are checked.
      - Without it, the whole image is written.
    type: path
  sha256:
    description:
      - Expected SHA-256 (hex) of the O(image) file as given (the compressed file for a compressed image).
        A mismatch fails every node.
    type: str
  force:
    description:
      - Reflash even nodes whose record says they already hold this image with these first-boot settings.
    type: bool
    default: false
  usb_paths:
    description:
      - Node number to the sysfs name of the node's USB port on the controller, for nodes whose port is not
        where the hat's hub puts it.
      - Nodes not given here are found, not typed. The hat's USB2517 hub is the one with the RP2040 on its
        port 1, and node N is on its port N+1 (C(1-1.3.2) for node 1 with the hub on the Pi 4's USB port 3).
      - Paths must be sysfs USB device names, one per node.
    type: dict
  usb_hub:
    description:
      - Sysfs name of the hat's USB2517 hub (for example C(1-1.3)) when more than one hat is attached. It must
        be a USB2517 with the RP2040 on its port 1. Without it the hub is searched for under O(root).
    type: str
  rpiboot:
    description:
      - The rpiboot executable (from Raspberry Pi's usbboot), a name on E(PATH) or a path.
    type: str
    default: rpiboot
  rpiboot_payload:
    description:
      - The directory rpiboot serves to the node (C(-d)). A bare name is looked up next to the rpiboot
        executable and in C(/usr/share/rpiboot), C(/usr/local/share/rpiboot), C(/usr/share/usbboot),
        C(/usr/local/share/usbboot), C(/opt/usbboot) and C(~/usbboot).
      - C(mass-storage-gadget64) exposes the eMMC at USB 2.0 speed; the legacy C(msd) payload is much slower and deprecated for CM4.
    type: str
    default: mass-storage-gadget64
  rpiboot_timeout:
    description:
      - Seconds rpiboot may take to find the node and load the gadget.
    type: float
    default: 60.0
  root:
    description:
      - The system root below which C(sys/) and C(dev/) are read to find the node's disk. Only tests and
        the simulator set this.
    type: path
    default: /
  disk_timeout:
    description:
      - Seconds to wait, after rpiboot, for the node's eMMC to appear as a disk.
    type: float
    default: 60.0
  verify:
    description:
      - Read back everything written (bypassing the page cache) and compare it with the image.
    type: bool
    default: true
  write_chunk_size:
    description:
      - Bytes per write to the disks. The default suits the USB 2.0 link; small values only slow a flash
        down (the fault tests use that to unplug a disk mid-write).
    type: int
  firstboot:
    description:
      - First-boot settings written to the boot partition of each flashed node, without mounting it (mtools).
      - When left out, the image is written exactly as it is.
      - The settings are part of the node's record, so changing them reflashes the node.
    type: dict
    suboptions:
      style:
        description:
          - V(bookworm) writes C(ssh), C(userconf.txt) and, for a hostname or keys, a C(firstrun.sh) run once
            through C(systemd.run=) on the kernel command line (how Raspberry Pi Imager customises
            Raspberry Pi OS 12).
          - V(cloud-init) writes the NoCloud C(user-data), C(meta-data) and C(network-config) files that
            Raspberry Pi OS 13 (Trixie) reads, and C(ssh).
          - V(auto) uses V(cloud-init) when the image's boot partition already has C(user-data),
            C(meta-data) or C(network-config), or its C(cmdline.txt) mentions C(ds=nocloud) or C(cloud-init);
            V(bookworm) otherwise.
        type: str
        choices: [auto, bookworm, cloud-init]
        default: auto
      hostname:
        description:
          - Host name of the node. C({node}) is replaced by the node number, so V(node{node}) names them node1 to node4.
        type: str
      user:
        description:
          - The first user, created at first boot.
        type: str
      password_hash:
        description:
          - The user's password as a crypt(3) hash (C(mkpasswd -m sha-512)), never the clear password. Never shown
            in output. Mutually exclusive with O(firstboot.password).
          - The hash is part of the node's record, so give the same hash on every run (a stored one, or the
            C(password_hash) filter with a fixed salt), or every run reflashes the node.
        type: str
      password:
        description:
          - The user's clear password, for example from a vault. The module hashes it (SHA-512 crypt) with a salt
            derived from the password, the node number and the user, so the hash is the same on every run and a
            second run does not reflash. Needs passlib (or Python's crypt) on the controller. Never shown in output.
        type: str
      ssh_authorized_keys:
        description:
          - SSH public keys, one per entry, for the user (or the image's first user when O(firstboot.user) is not set).
        type: list
        elements: str
      ssh:
        description:
          - Enable the SSH server at first boot.
        type: bool
        default: true
      ssh_password_authentication:
        description:
          - Allow SSH password logins. Default is true only when a password hash and no keys are given.
        type: bool
      enable_uart:
        description:
          - Make sure C(config.txt) has C(enable_uart=1) in force, so the node's console (O(consoles)) shows its boot.
        type: bool
        default: true
      network_config:
        description:
          - cloud-init network configuration (version 2) for V(cloud-init) style. Without it the image's
            C(network-config) is kept, or DHCP on eth0 is written when the image has none.
        type: dict
  wait_for:
    description:
      - A regular expression to wait for on each flashed node's console after its power cycle, for example
        C(login:). The node fails (and is switched off) when it does not appear within O(boot_timeout).
    type: str
  consoles:
    description:
      - Node number to the controller's serial device of the node's console (for O(wait_for)), for example
        V(1) to C(/dev/ttyAMA1). Which host UART goes to which slot depends on the board, so set it per controller.
    type: dict
    default: {}
  boot_timeout:
    description:
      - Seconds to wait for O(wait_for) after the power cycle.
    type: float
    default: 180.0
  progress_file:
    description:
      - JSON file rewritten while the flash runs, with each node's step and bytes written. Default
        C(flash/progress.json) under O(state_dir).
    type: path
  stagger:
    description:
      - Seconds between successive power-ons, to spread the inrush current.
    type: float
    default: 1.0
  restart_delay:
    description:
      - Seconds a node stays off in a power cycle, 0 to 60.
    type: float
    default: 2.0
  watchdog:
    description:
      - Seconds without a poll of the progress (M(minicluster.cm4.flash_progress) touches a heartbeat file next to
        O(progress_file) at each poll) after which the flash stops cleanly, as when the play that started it was
        interrupted. V(0) turns it off; otherwise at least 10.
    type: float
    default: 0.0
  abort:
    description:
      - Instead of flashing, stop the flash that holds the nodes asked for (SIGTERM to its process) and wait until
        it has released them; then make sure they are off with USB boot released. A node a killed flash left is
        switched off too. Nodes no flash holds are left alone.
    type: bool
    default: false
  abort_timeout:
    description:
      - Seconds O(abort=true) waits for the flash to stop, more than 0 and at most 600.
    type: float
    default: 120.0
  method:
    description:
      - How the image reaches the nodes' eMMC.
      - V(usb) writes it through rpiboot's mass-storage gadget over the hat's one USB 2.0 link.
      - V(network) boots every node over rpiboot into a small agent that pulls the image over the hat's
        gigabit switch from a server on the controller, writes and verifies it on the node, and reports
        the digests, which the controller compares with the bmap. Needs O(bmap) with SHA-256 ranges and
        O(network). Not yet tried on a real board; see C(docs/netflash.md).
    type: str
    choices: [usb, network]
    default: usb
  network:
    description:
      - Options of O(method=network).
    type: dict
    suboptions:
      interface:
        description: The controller's interface on the hat switch.
        type: str
        default: eth0
      server_address:
        description: The controller's address on O(network.interface); the server binds to it only.
        type: str
      server_port:
        description: TCP port of the server; a port in use is refused before any node is touched.
        type: int
        default: 8370
      node_addresses:
        description: Node number to C(ADDRESS/PREFIX) its agent puts on C(eth0), in the controller's subnet.
        type: dict
        default: {}
      serials:
        description: Node number to the CM4's serial number (hex, as its bootloader prints it); plans are keyed by it.
        type: dict
        default: {}
      payload:
        description: The built payload directory (C(make payload) prints it); checked against its build record.
        type: path
      bootfiles:
        description: usbboot's second stage on the controller, sent first by C(rpiboot).
        type: path
        default: /usr/share/rpiboot/mass-storage-gadget64/bootfiles.bin
      device:
        description: The eMMC as the node's kernel names it.
        type: str
        default: /dev/mmcblk0
      timeout:
        description: Seconds to wait for every node's report.
        type: float
        default: 1800.0
notes:
  - The flash and the first-boot edits run on the controller, which needs C(rpiboot) with its payloads,
    mtools (for O(firstboot)) and the Python zstandard package (for C(.zst) images).
  - All nodes share the hub's single USB 2.0 link to the controller; flashing four nodes at once takes
    about as long as the link allows for the mapped bytes of one image times four.
seealso:
  - module: minicluster.cm4.node_power
  - module: minicluster.cm4.hat_info
'''

EXAMPLES = r'''
- name: Flash Raspberry Pi OS on every node, writing only what the bmap maps
  minicluster.cm4.node_flash:
    nodes: [1, 2, 3, 4]
    image: /srv/images/2025-05-13-raspios-bookworm-arm64-lite.img.xz
    bmap: /srv/images/2025-05-13-raspios-bookworm-arm64-lite.img.bmap
    firstboot:
      hostname: "node{node}"
      user: admin
      # Hashed on the controller with a stable salt: the second run changes nothing.
      password: "{{ vault_admin_password }}"
      ssh_authorized_keys:
        - "{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"
    wait_for: "login:"
    consoles: {1: /dev/ttyAMA1, 2: /dev/ttyAMA2, 3: /dev/ttyAMA3, 4: /dev/ttyAMA4}

- name: Flash over the hat's gigabit switch (method network; not yet tried on a real board)
  minicluster.cm4.node_flash:
    nodes: [1, 2, 3, 4]
    image: /srv/images/2025-05-13-raspios-bookworm-arm64-lite.img.xz
    bmap: /srv/images/2025-05-13-raspios-bookworm-arm64-lite.img.bmap
    method: network
    network:
      interface: eth0
      server_address: 192.168.50.1
      node_addresses: {1: 192.168.50.11/24, 2: 192.168.50.12/24, 3: 192.168.50.13/24, 4: 192.168.50.14/24}
      serials: {1: 3f1c2a01, 2: 3f1c2a02, 3: 3f1c2a03, 4: 3f1c2a04}
      payload: /srv/netflash/cm4-0f068d52b0d3f843

- name: A stored hash works too; with the password_hash filter, fix the salt or every run reflashes
  minicluster.cm4.node_flash:
    nodes: [1, 2]
    image: /srv/images/2025-05-13-raspios-bookworm-arm64-lite.img.xz
    firstboot:
      user: admin
      password_hash: "{{ vault_admin_password | password_hash('sha512', vault_admin_salt) }}"

- name: Reflash node 3 even though its record matches
  minicluster.cm4.node_flash:
    node: 3
    image: /srv/images/custom.img.zst
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    force: true

- name: Which nodes would be flashed?
  minicluster.cm4.node_flash:
    nodes: [1, 2, 3, 4]
    image: /srv/images/custom.img.xz
  check_mode: true
  register: plan

- name: Flash in the background and follow its progress file
  minicluster.cm4.node_flash:
    nodes: [1, 2]
    image: /srv/images/custom.img.xz
    progress_file: /tmp/reflash-progress.json
  async: 3600
  poll: 0
  register: flash_job
'''

RETURN = r'''
msg:
  description: One line per failed node saying what failed, where and what to do; a summary otherwise.
  returned: always
  type: str
  sample: "node2: rpiboot failed at USB path 1-1.3.3 (exit 1: no device): check the node is in USB boot and usb_paths maps node 2 to its hub port"
image_digest:
  description: Identity of the image as recorded per node (digest of the decompressed content).
  returned: when the image could be read
  type: str
  sample: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
bmap_digest:
  description: Digest of the bmap file, or null without one.
  returned: when the image could be read
  type: str
  sample: "sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"
progress_file:
  description: The progress file of this run.
  returned: always
  type: str
  sample: /var/lib/minicluster-cm4/flash/progress.json
nodes:
  description: One entry per node asked for.
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: Node number, 1 to 4.
      type: int
      sample: 2
    usb_path:
      description: The node's USB path.
      type: str
      sample: 1-1.2.2
    action:
      description: V(flashed), V(unchanged), V(would flash) (check mode) or V(failed); with O(abort=true), V(aborted),
        V(released) (a dead run's node switched off) or V(idle).
      type: str
      sample: flashed
    reasons:
      description: Why the node was (or would be) flashed, for example C(no record), C(image_digest), C(force).
      type: list
      elements: str
      sample: [image_digest]
    changed:
      description: Whether the node's eMMC or power was (or would be) changed.
      type: bool
    failed:
      description: Whether this node failed.
      type: bool
    msg:
      description: The node's one-line error.
      type: str
      returned: when the node failed
    failed_step:
      description: Step that failed, one of preflight, usb boot, rpiboot, disk, write, verify, firstboot, boot, console.
      type: str
      returned: when the node failed
    disk:
      description: The node's disk as found (name, path, size in bytes, model, by_path).
      type: dict
      returned: when the disk was found
    bytes_written:
      description: Bytes written to the node's eMMC.
      type: int
      returned: when the node was written
      sample: 2147483648
    verified:
      description: Whether the read-back matched the image.
      type: bool
      returned: when the node was written
    content_digest:
      description: Digest of the content written, as the writer computed it.
      type: str
      returned: when the node was written
    write_seconds:
      description: Seconds the write (and read-back) took for this node.
      type: float
      returned: when the node was written
    firstboot:
      description: First-boot customisation done (style, boot partition, names of files changed, settings digest); never file contents.
      type: dict
      returned: when firstboot was given and applied
    booted:
      description: Whether the node was released from USB boot and power-cycled.
      type: bool
      returned: when the node was flashed
    console_match:
      description: The console text that matched O(wait_for).
      type: str
      returned: when wait_for matched
    power_actions:
      description: Pin actions sent to the hat for this node, in order.
      type: list
      elements: str
      returned: when the node was touched
    seconds:
      description: Wall time this node took, from USB boot to done.
      type: float
      returned: when the node was flashed or failed after being touched
    mb_per_s:
      description: Write rate of this node in MB/s (bytes written over write time), as the progress lines showed it.
      type: float
      returned: when the node was written
    interrupted_run:
      description: A flash of this node that died before it ended (run, pid, started, phase), found by this run.
      type: dict
      returned: when one was found
    run:
      description: With O(abort=true), the run that held the node.
      type: str
      returned: with abort, when a flash held the node
    pid:
      description: With O(abort=true), the process id of that run.
      type: int
      returned: with abort, when a flash held the node
    record:
      description: The node's flash record after the task.
      type: dict
      returned: when one exists
'''

import json
import os
import signal
import time


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.minicluster.cm4.plugins.module_utils.board import owner as ownermod
from ansible_collections.minicluster.cm4.plugins.module_utils.board import usb as usbmod
from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import HatError, check_nodes
from ansible_collections.minicluster.cm4.plugins.module_utils.board.options import check_hat_options, hat_argument_spec, hat_from_module
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import atomic_write_json, ensure_dir
from ansible_collections.minicluster.cm4.plugins.module_utils.flash import firstboot as fbmod
from ansible_collections.minicluster.cm4.plugins.module_utils.flash import pipeline
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.disk import DiskError
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import FlashError
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.guardian import Guardian
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.network import NetworkReflash
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.record import FlashRecords, ProgressFile, heartbeat_path
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.reflash import Reflash, ReflashError

FIRSTBOOT_SPEC = dict(
    style=dict(type='str', default='auto', choices=['auto', 'bookworm', 'cloud-init']),
    hostname=dict(type='str'),
    user=dict(type='str'),
    password_hash=dict(type='str', no_log=True),
    password=dict(type='str', no_log=True),
    ssh_authorized_keys=dict(type='list', elements='str', no_log=False),
    ssh=dict(type='bool', default=True),
    ssh_password_authentication=dict(type='bool'),
    enable_uart=dict(type='bool', default=True),
    network_config=dict(type='dict'),
)


MiB = 1024 * 1024
# Bounds of the numeric options. A timeout past these is a typo, not a plan: the hat and the nodes
# stay held while it runs.
LIMITS = dict(rpiboot_timeout=600.0, disk_timeout=600.0, boot_timeout=3600.0, abort_timeout=600.0)
CHUNK_ALIGN = 4096
CHUNK_MAX = 64 * MiB


def validate_params(p):
    """Every option checked before anything is opened; raises validate.InvalidOption.

    Returns (nodes, usb_paths, consoles) with node numbers as integers.
    """
    name = 'node' if p['node'] is not None else 'nodes'
    nodes = validate.node_list(name, [p['node']] if p['node'] is not None else p['nodes'])
    check_hat_options(p)
    validate.number('watchdog', p['watchdog'], 0, 86400, unit='seconds')
    if p['watchdog'] and 0 < p['watchdog'] < 10:
        raise validate.InvalidOption('watchdog must be 0 (off) or at least 10 seconds, not %s' % p['watchdog'])
    if p['abort']:
        return nodes, {}, {}
    if p['image'] is None:
        raise validate.InvalidOption('image is required: give the image file to flash (or abort=true to stop a flash)')
    validate.regular_file('image', p['image'])
    validate.regular_file('bmap', p['bmap'])
    if p['sha256'] is not None:
        validate.matches('sha256', p['sha256'].strip(), r'(?i)(sha256:)?[0-9a-f]{64}', 'a SHA-256 hex digest (64 hex digits)')
    # Given paths only; the others come from the hat's hub (board/usb.py checks form and duplicates).
    usb_paths = {}
    for node, path in validate.node_keyed('usb_paths', p['usb_paths']).items():
        usb_paths[node] = validate.text('usb_paths node %d' % node, path, empty=False)
    validate.text('usb_hub', p['usb_hub'])
    validate.text('rpiboot', p['rpiboot'], empty=False)
    validate.text('rpiboot_payload', p['rpiboot_payload'], empty=False)
    for option, high in LIMITS.items():
        validate.number(option, p[option], 0, high, low_open=True, unit='seconds')
    validate.directory('root', p['root'])
    validate.aligned('write_chunk_size', p['write_chunk_size'], CHUNK_ALIGN, CHUNK_ALIGN, CHUNK_MAX)
    validate.text('wait_for', p['wait_for'], empty=False)
    consoles = {}
    for node, path in validate.node_keyed('consoles', p['consoles']).items():
        consoles[node] = validate.text('consoles node %d' % node, path, empty=False)
    validate.file_target('progress_file', p['progress_file'])
    fb = p['firstboot'] or {}
    for key in ('hostname', 'user', 'password_hash', 'password'):
        validate.text('firstboot.%s' % key, fb.get(key))
    for key in fb.get('ssh_authorized_keys') or []:
        validate.text('firstboot.ssh_authorized_keys entry', key)
    if p['method'] == 'network':
        # Normalized once, here: job_class() builds the network flash from these.
        p['network'] = validate_network(p['network'])
    return nodes, usb_paths, consoles


NETWORK_SPEC = dict(
    interface=dict(type='str', default='eth0'),
    server_address=dict(type='str'),
    server_port=dict(type='int', default=8370),
    node_addresses=dict(type='dict', default={}),
    serials=dict(type='dict', default={}),
    payload=dict(type='path'),
    bootfiles=dict(type='path', default='/usr/share/rpiboot/mass-storage-gadget64/bootfiles.bin'),
    device=dict(type='str', default='/dev/mmcblk0'),
    timeout=dict(type='float', default=1800.0),
)


def job_class(p):
    """Reflash for method usb; NetworkReflash, with its options (checked by validate_params), for method network."""
    if p['method'] != 'network':
        return Reflash
    return lambda *args, **kwargs: NetworkReflash(*args[:2], network=p['network'], **kwargs)


def validate_network(value):
    """The network options, node-keyed maps with integer keys; raises validate.InvalidOption."""
    net = dict(value or {})
    for key in ('node_addresses', 'serials'):
        net[key] = dict((node, validate.text('network.%s node %d' % (key, node), item, empty=False))
                        for node, item in validate.node_keyed('network.' + key, net.get(key)).items())
    for key in ('interface', 'server_address', 'device'):
        validate.text('network.' + key, net.get(key))
    validate.number('network.server_port', net.get('server_port'), 1, 65535, integer=True)
    validate.number('network.timeout', net.get('timeout'), 0, 86400, low_open=True, unit='seconds')
    return net


def argument_spec():
    spec = hat_argument_spec()
    spec.update(
        node=dict(type='int'),
        nodes=dict(type='list', elements='int'),
        image=dict(type='path'),
        bmap=dict(type='path'),
        sha256=dict(type='str'),
        force=dict(type='bool', default=False),
        usb_paths=dict(type='dict'),
        usb_hub=dict(type='str'),
        rpiboot=dict(type='str', default='rpiboot'),
        rpiboot_payload=dict(type='str', default='mass-storage-gadget64'),
        rpiboot_timeout=dict(type='float', default=60.0),
        root=dict(type='path', default='/'),
        disk_timeout=dict(type='float', default=60.0),
        verify=dict(type='bool', default=True),
        write_chunk_size=dict(type='int'),
        firstboot=dict(type='dict', options=FIRSTBOOT_SPEC),
        wait_for=dict(type='str'),
        consoles=dict(type='dict', default={}),
        boot_timeout=dict(type='float', default=180.0),
        progress_file=dict(type='path'),
        stagger=dict(type='float', default=1.0),
        restart_delay=dict(type='float', default=2.0),
        watchdog=dict(type='float', default=0.0),
        abort=dict(type='bool', default=False),
        abort_timeout=dict(type='float', default=120.0),
        method=dict(type='str', default='usb', choices=['usb', 'network']),
        network=dict(type='dict', options=NETWORK_SPEC),
    )
    return spec


def summary(jobs):
    counts = {}
    for job in jobs:
        counts[job.action] = counts.get(job.action, 0) + 1
    return ', '.join('%s %s' % (n, a) for a, n in sorted(counts.items())) or 'nothing to do'


def fail_all(module, nodes, exc, result, progress=None):
    """A problem found before any node was touched: the same line for every node asked for."""
    result['nodes'] = [dict(node=n, action='failed', failed=True, changed=False, failed_step='preflight',
                            msg='node%d: %s' % (n, exc)) for n in nodes]
    # A refusal before the first write leaves no progress file behind; a poller gets the task's result.
    if progress is not None and progress.written:
        for n in nodes:
            progress.phase(n, 'failed', error=str(exc))
        progress.finish(False)
    module.fail_json(msg='%s: %s' % (', '.join('node%d' % n for n in nodes), exc), **result)


def build(module, nodes, usb_paths, consoles, progress):
    p = module.params
    flash_options = {}
    if p['write_chunk_size'] is not None:
        flash_options['chunk_size'] = p['write_chunk_size']
    usb_paths = usbmod.resolve_node_paths(nodes, p['root'], usb_paths, p['usb_hub'])
    firstboot = None
    if p['firstboot'] is not None:
        firstboot = dict((k, v) for k, v in p['firstboot'].items() if v is not None)
    return job_class(p)(
        nodes, p['image'], hat_factory=lambda: hat_from_module(module, restart_delay=p['restart_delay']),
        records=FlashRecords(p['state_dir']), flash_fn=pipeline.flash, identity_fn=pipeline.image_identity,
        check_fn=pipeline.check_image,
        bmap=p['bmap'], sha256=p['sha256'], force=p['force'], usb_paths=usb_paths,
        rpiboot=p['rpiboot'], rpiboot_payload=p['rpiboot_payload'], rpiboot_timeout=p['rpiboot_timeout'],
        root=p['root'], disk_timeout=p['disk_timeout'], firstboot=firstboot, wait_for=p['wait_for'],
        consoles=consoles, boot_timeout=p['boot_timeout'], verify=p['verify'],
        progress=progress, check_mode=module.check_mode, stagger=p['stagger'],
        restart_delay=p['restart_delay'], flash_options=flash_options)


def progress_in_use(path):
    """The run that is writing this progress file now, or None."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get('finished') or not isinstance(data.get('pid'), int):
        return None
    if data['pid'] == os.getpid():
        return None
    try:
        os.kill(data['pid'], 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return data


def abort(module, nodes, result):
    """Stop the flashes that hold these nodes and wait until they have released them."""
    p = module.params
    live, dead = ownermod.holders(p['state_dir'], nodes)
    dead = dict((n, info) for n, info in dead.items() if info.get('phase') not in ownermod.UNTOUCHED)
    entries = dict((n, dict(node=n, action='idle', changed=False, failed=False)) for n in nodes)
    for n, info in live.items():
        entries[n].update(action='aborted', changed=True, run=info.get('run'), pid=info.get('pid'), phase=info.get('phase'))
    for n, info in dead.items():
        entries[n].update(action='released', changed=True, run=info.get('run'), pid=info.get('pid'), phase=info.get('phase'))
    result['nodes'] = [entries[n] for n in nodes]
    result['changed'] = bool(live or dead)
    if module.check_mode or not (live or dead):
        result['msg'] = ('no flash holds node %s' % ', '.join(str(n) for n in nodes) if not (live or dead)
                         else 'would stop %s' % '; '.join(ownermod.describe(n, i) for n, i in sorted(live.items())))
        module.exit_json(**result)
    for pid in sorted(set(info.get('pid') for info in live.values() if isinstance(info.get('pid'), int))):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except OSError as exc:
            module.fail_json(msg='cannot stop the flash with pid %d: %s: run the abort as the user that started it'
                             % (pid, exc.strerror), **result)
    deadline = time.monotonic() + p['abort_timeout']
    while True:
        still, _dead = ownermod.holders(p['state_dir'], list(live))
        if not still or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if still:
        module.fail_json(msg='%s did not stop within %ss: check the process and the nodes by hand'
                         % ('; '.join(ownermod.describe(n, i) for n, i in sorted(still.items())), p['abort_timeout']),
                         **result)
    # The stopped run switched its nodes off itself; make sure, and repair what a dead run left.
    try:
        hat = hat_from_module(module, restart_delay=p['restart_delay'])
        hat.ensure(sorted(set(live) | set(dead)), 'off', boot_mode='normal', stagger=p['stagger'])
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='the flash stopped, but switching node %s off failed: %s: switch it off with node_power'
                         % (', '.join(str(n) for n in sorted(set(live) | set(dead))), exc), **result)
    for n, info in dead.items():
        ownermod.mark_released(p['state_dir'], n, info.get('run'), 'switched off and USB boot released by an abort')
    result['msg'] = 'stopped: %s' % ', '.join('node%d (%s)' % (n, entries[n]['action']) for n in nodes
                                              if entries[n]['action'] != 'idle')
    module.exit_json(**result)


def on_death(module, nodes, run, progress_path):
    """Run by the guardian when the flash died: its touched nodes go off with USB boot released."""
    state_dir = module.params['state_dir']
    touched = []
    for n in nodes:
        info = ownermod.read_owner(state_dir, n)
        if info and info.get('run') == run and info.get('phase') not in ownermod.UNTOUCHED:
            touched.append(n)
    note = 'switched off and USB boot released after the flash (pid %d) died' % os.getpid()
    try:
        if touched:
            hat_from_module(module, restart_delay=module.params['restart_delay']).ensure(
                touched, 'off', boot_mode='normal', stagger=module.params['stagger'])
    except Exception as exc:  # pylint: disable=broad-except
        note = 'the flash (pid %d) died and switching its nodes off failed: %s' % (os.getpid(), exc)
    # The run is marked finished before its nodes are freed: whoever sees a node free sees the run ended.
    try:
        with open(progress_path) as f:
            data = json.load(f)
        if data.get('run') == run and not data.get('finished'):
            data.update(finished=True, ok=False, summary='%s; node %s: %s' % (
                data.get('summary', ''), ', '.join(str(n) for n in touched) or '-', note))
            atomic_write_json(progress_path, data)
    except (IOError, OSError, ValueError, AttributeError):
        pass
    for n in touched:
        ownermod.mark_released(state_dir, n, run, note)


def main():
    module = validate.ansible_module(
        AnsibleModule, argument_spec=argument_spec(), supports_check_mode=True,
        mutually_exclusive=[('node', 'nodes')], required_one_of=[('node', 'nodes')])
    p = module.params
    progress_path = p['progress_file'] or os.path.join(p['state_dir'], 'flash', 'progress.json')
    result = dict(changed=False, progress_file=progress_path, nodes=[])
    try:
        nodes, usb_paths, consoles = validate_params(p)
        nodes = check_nodes(nodes, p['port'])
    except (validate.InvalidOption, HatError, DiskError) as exc:
        module.fail_json(msg=str(exc), **result)
    if p['abort']:
        abort(module, nodes, result)
    progress = None
    run = '%s-%d' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()), os.getpid())
    if not module.check_mode:
        other = progress_in_use(progress_path)
        if other is not None:
            module.fail_json(msg='progress file %s belongs to run %s (pid %s), which is still flashing (%s): give this '
                                 'run its own progress_file' % (progress_path, other.get('run'), other.get('pid'),
                                                                other.get('summary') or 'starting'), **result)
        progress = ProgressFile(progress_path, nodes, run_id=run)
    job = None
    guardian = []
    try:
        job = build(module, nodes, usb_paths, consoles, progress)
        job.run_info = {'run': run, 'pid': os.getpid(), 'started': time.time()}
        if p['watchdog'] and progress is not None:
            job.watchdog = p['watchdog']
            job.heartbeat = heartbeat_path(progress_path)

        def before_touch():
            # Everything is checked and there is work to do. The guardian is forked before any lock
            # is taken or device opened, so that it shares none of them.
            guardian.append(Guardian(lambda: on_death(module, nodes, run, progress_path)).start())
            for signum, name in ((signal.SIGTERM, 'SIGTERM'), (signal.SIGINT, 'SIGINT'), (signal.SIGHUP, 'SIGHUP')):
                signal.signal(signum, lambda s, f, name=name: job.request_stop('%s received' % name))
            if job.heartbeat:
                # The clock starts now: a poller has watchdog seconds to show up.
                ensure_dir(os.path.dirname(job.heartbeat))
                with open(job.heartbeat, 'a'):
                    os.utime(job.heartbeat, None)
        job.before_touch = before_touch
        try:
            job.run()
        finally:
            if progress is not None and job.jobs:
                progress.finish(not any(j.failed for j in job.jobs.values()))
    except (ReflashError, HatError, DiskError, fbmod.FirstbootError, FlashError, usbmod.UsbError, OSError) as exc:
        for g in guardian:
            g.stop()
        fail_all(module, nodes, exc, result, progress)
    for g in guardian:
        g.stop()

    jobs = [job.jobs[n] for n in nodes]
    for j in jobs:
        if j.action == 'none':
            j.action = 'unchanged'
    for j in jobs:
        entry = j.result()
        if j.record:
            entry['record'] = j.record
        result['nodes'].append(entry)
    ident = job.identity or {}
    result['image_digest'] = ident.get('image_digest')
    result['bmap_digest'] = ident.get('bmap_digest')
    result['changed'] = any(e['changed'] for e in result['nodes'])
    if module._diff:
        keys = ('image_digest', 'bmap_digest', 'firstboot_digest')
        result['diff'] = dict(
            before=dict(('node%d' % j.node, dict((k, (j.record_before or {}).get(k)) for k in keys)) for j in jobs),
            after=dict(('node%d' % j.node, dict((k, (j.record or {}).get(k)) for k in keys)
                        if j.action != 'would flash' else job.wanted(j.node)) for j in jobs),
        )
    interrupted = [j for j in jobs if j.interrupted]
    for j in interrupted:
        module.warn('node%d: run %s (pid %s) died while flashing it (at %s); %s' % (
            j.node, j.interrupted.get('run'), j.interrupted.get('pid'),
            j.interrupted.get('interrupted_phase') or j.interrupted.get('phase'),
            'this run reflashed it' if j.action == 'flashed' else 'it still needs a flash'))
    failed = [j for j in jobs if j.failed]
    if failed:
        module.fail_json(msg='\n'.join(j.error for j in failed), **result)
    result['msg'] = summary(jobs)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
