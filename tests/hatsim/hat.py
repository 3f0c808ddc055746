# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The whole simulated hat: nodes, chips, buses, ptys, USB boot, and state.json.

One re-entrant lock guards every piece of hat state. The RP2040 firmware, each I2C client, each
control client, the node consoles and the timer thread all take it for the duration of one event,
so every observer sees events in one order. Anything that changes state publishes state.json
(atomically, by rename) before the client that caused the change gets its answer.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import random
import shutil
import threading
import time

from hatsim import bootlog
from hatsim import bootsel
from hatsim import disks
from hatsim.chips.eeprom24lc08 import M24LC08, BASE_ADDRESS, SIZE as EEPROM_SIZE
from hatsim.chips.emc2301 import EMC2301
from hatsim.chips.ina226 import INA226
from hatsim.chips.tmp117 import TMP117
from hatsim.chips import usb2517
from hatsim.console import ConsolePort
from hatsim.fakesys import FakeSys
from hatsim.i2c import Bus
from hatsim.lineserver import LineServer
from hatsim.node import Node
from hatsim.options import NODES
from hatsim.ptyport import PtyPort
from hatsim.rp2040 import RP2040
from hatsim.scheduler import Scheduler
from hatsim.stdio import Stdio

LOG = logging.getLogger('hatsim')

INA226_ADDRESS = 0x40
EMC2301_ADDRESS = 0x2F
# Each card pulls ADD0 up; the hat leaves it open on slot 1, ties it to GND, SCL, SDA on slots 2, 3, 4.
TMP117_ADDRESSES = {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}
RP2040_PORT = 1
NODE_PORTS = {1: 2, 2: 3, 3: 4, 4: 5}
HAT_OVERHEAD_A = 0.25
FAN_MAX_A = 0.15
SUPPLY_V = 12.0
SUPPLY_OHMS = 0.05
RP2040_LOG_CAP = 20000
EEPROM_WRITES_CAP = 1000
PHYSICS_HZ = 10
PUBLISH_EVERY_TICKS = 10
NO_MEDIA_RETRY_S = 2.0
LINE_GAP_S = 0.002
STATE_VERSION = 1


class Hat(object):

    def __init__(self, directory, options):
        self.dir = os.path.abspath(directory)
        self.options = options
        self.initial_options = options.as_dict()
        self.lock = threading.RLock()
        self.scheduler = Scheduler()
        self.rng = random.Random(4)
        self.started_at = time.time()
        self.seq = 0
        self._published_seq = -1
        self._publish_lock = threading.Lock()
        self._rp2040_log = collections.deque(maxlen=RP2040_LOG_CAP)
        self._rp2040_log_total = 0
        self._last_tick = time.monotonic()
        self._ticks = 0
        self.stopped = threading.Event()
        self.decoys = {}
        self.path = lambda *parts: os.path.join(self.dir, *parts)

        os.makedirs(self.path('emmc'), exist_ok=True)
        # Where a usbboot checkout keeps its payloads: the fake rpiboot needs -d to exist.
        os.makedirs(self.path('usbboot', 'mass-storage-gadget64'), exist_ok=True)
        now = time.monotonic()
        self.nodes = {}
        for n in NODES:
            emmc = self.path('emmc', 'node%d.img' % n)
            disks.ensure_image(emmc, options.emmc_size)
            self.nodes[n] = Node(n, '%s.%d' % (options.hub_path, NODE_PORTS[n]), emmc, n not in options.empty_slots,
                                 options.ambient_c, random.Random(n))
        self.eeprom = M24LC08(self._initial_eeprom(), options.write_cycle_ms / 1000.0, self._eeprom_committed)
        self.emc2301 = EMC2301(random.Random(2301))
        self.ina226 = INA226(self._input_measure, random.Random(226))
        self.tmp117 = {}
        for n in NODES:
            if self.nodes[n].present:
                self.tmp117[n] = TMP117(self._temperature_of(n), now)
        self.usb_hub = {}
        self.hub_loads = 0
        self._hub_load()

        # The RP2040: its console on USB (behind the hub) and on UART5; its RUN and BOOTSEL lines.
        self.rp2040_mode = 'firmware'  # firmware, reset (RUN held low) or bootrom (the UF2 drive)
        self.rp2040_boots = 1
        self.rp2040_firmware = None
        self._uf2_reboot_pending = False
        self.bootrom_drive = self.path('rp2040-bootrom.img')
        self.gpio = bootsel.Gpio(self._gpio_changed)
        self.rp2040_stdio = Stdio({'usb': PtyPort(self.path('rp2040')), 'uart': PtyPort(self.path('rp2040-uart'))},
                                  lambda: self.rp2040_mode == 'firmware')
        self.rp2040 = RP2040(self.rp2040_stdio, self, random.Random(2040))
        self.fakesys = FakeSys(self.dir)
        self._usb_tree()
        self.bus_host = Bus('i2c-1', self._resolve_host, self.lock, self.touched)
        self.bus_hub = Bus('i2c-hub', self._resolve_hub, self.lock, self.touched)
        self.consoles = dict((n, ConsolePort(self.path('console%d' % n), 'console%d' % n)) for n in NODES)
        self.servers = []
        self._threads = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self):
        from hatsim.control import Control  # the control ops need a built hat
        self.control = Control(self)
        self.servers = [
            LineServer(self.path('i2c-1.sock'), self.bus_host.handle, 'i2c-1'),
            LineServer(self.path('i2c-hub.sock'), self.bus_hub.handle, 'i2c-hub'),
            LineServer(self.path('control.sock'), self.control.handle, 'control'),
            LineServer(self.path('gpio.sock'), self.gpio.handle, 'gpio'),
        ]
        for server in self.servers:
            server.start()
        for console in self.consoles.values():
            console.start()
        thread = threading.Thread(target=self.rp2040.run, name='rp2040', daemon=True)
        thread.start()
        self._threads.append(thread)
        self.scheduler.start()
        self.scheduler.every(1.0 / PHYSICS_HZ, self._tick)
        self.changed()
        self.publish()

    def stop(self):
        """Stop every thread, remove sockets, ptys and the fake system tree; keep images and state."""
        self.rp2040.stop()
        for thread in self._threads:
            thread.join(5)
        for server in self.servers:
            server.stop()
        for console in self.consoles.values():
            console.stop()
        self.scheduler.stop()
        with self.lock:
            for node in self.nodes.values():
                node.new_epoch()
                node.disk = None
            self.changed()
        self.publish()
        self.fakesys.remove_all()
        self.stopped.set()

    # -- state.json --------------------------------------------------------------------------------
    def changed(self):
        with self.lock:
            self.seq += 1

    def touched(self):
        """Something changed: record it and publish it now."""
        self.changed()
        self.publish()

    def publish(self):
        """Write state.json if anything changed since the last write (coalescing, atomic)."""
        with self._publish_lock:
            with self.lock:
                if self._published_seq == self.seq:
                    return
                seq = self.seq
                text = self.state_json()
            tmp = self.path('.state.json.tmp')
            with open(tmp, 'w') as f:
                f.write(text)
            os.replace(tmp, self.path('state.json'))
            self._published_seq = seq

    def state_json(self):
        marker = '"@@RP2040_LOG@@"'
        state = self.state(log=False)
        state['rp2040']['log'] = marker[1:-1]
        text = json.dumps(state, indent=1, sort_keys=True)
        # The command log is kept pre-serialised: splicing it in keeps a 20000-entry log cheap.
        return text.replace(marker, '[' + ','.join(self._rp2040_log) + ']', 1)

    def state(self, log=True):
        with self.lock:
            opts = self.options.as_dict()
            state = {
                'version': STATE_VERSION, 'pid': os.getpid(), 'dir': self.dir, 'seq': self.seq,
                'started_at': self.started_at, 'updated_at': time.time(), 'options': opts,
                'jumpers': self.options.jumpers, 'line_ending': self.options.line_ending,
                'empty_slots': list(self.options.empty_slots),
                'rp2040': {
                    'channel': self.rp2040.channel, 'log_total': self._rp2040_log_total,
                    'mode': self.rp2040_mode, 'boots': self.rp2040_boots, 'firmware_sha256': self.rp2040_firmware,
                    'usb_path': self.rp2040_usb_path(), 'gpio': self.gpio.levels(),
                    'log': [json.loads(e) for e in self._rp2040_log] if log else None,
                },
                'nodes': dict((str(n), node.snapshot()) for n, node in self.nodes.items()),
                'eeprom': self.eeprom.snapshot(EEPROM_WRITES_CAP),
                'usb_hub': dict(self.usb_hub, in_reset=self.options.jumpers, loads=self.hub_loads),
                'emc2301': self.emc2301.snapshot(),
                'ina226': dict(self.ina226.snapshot(), address=INA226_ADDRESS),
                'tmp117': dict((str(n), dict(t.snapshot(), address=TMP117_ADDRESSES[n]))
                               for n, t in self.tmp117.items()),
                'i2c': {
                    'i2c-1': {'transactions': self.bus_host.transactions, 'nacks': self.bus_host.nacks},
                    'i2c-hub': {'transactions': self.bus_hub.transactions, 'nacks': self.bus_hub.nacks},
                },
                'disks': dict((name, {'usb_path': d['usb_path'], 'backing': d['backing'],
                                      'node': self._node_of_disk(name), 'decoy': name in self.decoys_by_disk()})
                              for name, d in self.fakesys.disks.items()),
                'decoys': self.decoys,
            }
            return state

    def _node_of_disk(self, name):
        for n, node in self.nodes.items():
            if node.disk == name:
                return n
        return None

    def decoys_by_disk(self):
        return set(d['disk'] for d in self.decoys.values())

    # -- RP2040 side -------------------------------------------------------------------------------
    def rp2040_logged(self, cmd, channel):
        with self.lock:
            self._rp2040_log_total += 1
            self._rp2040_log.append(json.dumps({'seq': self._rp2040_log_total, 'cmd': cmd, 'channel': channel,
                                                'path': self.rp2040_stdio.last_source}, sort_keys=True))
            self.changed()
        self.publish()

    def adc_millivolts(self, channel):
        with self.lock:
            return self.nodes[channel + 1].millivolts()

    def set_pin(self, channel, pin, value):
        with self.lock:
            node = self.nodes[channel + 1]
            old = getattr(node, pin)
            if old == value:
                return
            setattr(node, pin, value)
            LOG.info('node %d: %s %s', node.number, pin, 'high' if value else 'low')
            if node.present:
                if pin == 'en':
                    if value and node.run:
                        self._boot(node)
                    elif not value:
                        self._power_off(node)
                elif pin == 'run' and node.en:
                    if value:
                        self._boot(node)
                    else:
                        self._hold_in_reset(node)
            self.changed()

    # -- RP2040 reset, boot ROM and USB presence ------------------------------------------------------
    def rp2040_usb_path(self):
        """The hub's downstream port 1, where the RP2040 enumerates."""
        return '%s.%d' % (self.options.hub_path, RP2040_PORT)

    def _gpio_changed(self, apply):
        with self.lock:
            was_running = self.gpio.level(bootsel.RUN_LINE)
            apply()
            running = self.gpio.level(bootsel.RUN_LINE)
            if was_running and not running:
                self._rp2040_reset()
            elif running and not was_running:
                self._rp2040_boot()
            self.changed()
        self.publish()

    def _rp2040_reset(self):
        """RUN low: the RP2040 stops, and every node pin returns to its power-up level (EN low)."""
        LOG.info('RP2040 held in reset')
        self.rp2040_mode = 'reset'
        for channel in range(4):
            self.set_pin(channel, 'en', False)
            self.set_pin(channel, 'nrpiboot', True)
            self.set_pin(channel, 'run', True)
        self._rp2040_usb()

    def _rp2040_boot(self):
        """RUN high (or a reboot after a UF2): the boot ROM samples QSPI_SS (BOOTSEL)."""
        self.rp2040_boots += 1
        self.rp2040.channel = 0
        self._uf2_reboot_pending = False
        if self.gpio.level(bootsel.BOOTSEL_LINE) == 0:
            bootsel.make_drive(self.bootrom_drive)
            self.rp2040_mode = 'bootrom'
        else:
            self.rp2040_mode = 'firmware'
        LOG.info('RP2040 boots into its %s', self.rp2040_mode)
        self._rp2040_usb()

    def _rp2040_usb(self):
        """What the hub's port 1 shows: the console (CDC), the boot ROM's UF2 drive, or nothing."""
        self._usb_tree()

    def _uf2_check(self):
        """On a tick in the boot ROM: a complete UF2 on the drive means flash, then reboot."""
        if self.rp2040_mode != 'bootrom' or self._uf2_reboot_pending:
            return
        digest = bootsel.complete_image(self.bootrom_drive)
        if digest is None:
            return
        LOG.info('RP2040 boot ROM: UF2 image %s complete, rebooting', digest)
        self.rp2040_firmware = digest
        self._uf2_reboot_pending = True
        self.scheduler.call_later(bootsel.REBOOT_DELAY_S, self._uf2_reboot)

    def _uf2_reboot(self):
        with self.lock:
            if self.rp2040_mode != 'bootrom' or not self._uf2_reboot_pending:
                return
            self._rp2040_boot()
            self.changed()
        self.publish()

    # -- node life ---------------------------------------------------------------------------------
    def _boot(self, node):
        """Power-on or end of reset: the boot ROM samples nRPIBOOT now."""
        self._drop_usb(node)
        epoch = node.new_epoch()
        node.boots += 1
        node.unplugged = False
        node.payload = None
        node.usb_boot_at_power_on = not node.nrpiboot
        if node.usb_boot_at_power_on:
            node.set_mode('usb_rom')
            if self._usb_reachable(node):
                self.fakesys.add_usb_device(node.usb_path, '0a5c', '2711', 'BCM2711 Boot', 'Broadcom',
                                            bootlog.SERIALS.get(node.number))
            self._console_lines(node, epoch, bootlog.usb_rom_lines(), 0.05)
        else:
            node.set_mode('booting')
            self.scheduler.call_later(self.options.boot_delay, self._boot_from_emmc, node, epoch)

    def _boot_from_emmc(self, node, epoch):
        info = bootlog.inspect_emmc(node.emmc_path)
        hostname = None
        if info['bootable']:
            hostname = bootlog.first_boot_hostname(node.emmc_path, info['boot_lba'])
        with self.lock:
            if node.epoch != epoch:
                return
            if info['bootable']:
                node.hostname = hostname or self.options.hostnames.get(str(node.number)) or 'node%d' % node.number
                lines = bootlog.boot_lines(node.number, info, node.hostname)
                self._console_lines(node, epoch, lines, 0.0, then=self._login_prompt)
            else:
                node.set_mode('no_boot_media')
                node.hostname = None
                self._console_lines(node, epoch, bootlog.no_boot_media_lines(node.number, info), 0.0)
                self.scheduler.call_later(NO_MEDIA_RETRY_S, self._boot_from_emmc, node, epoch)
            self.changed()
        self.publish()

    def _login_prompt(self, node, epoch):
        with self.lock:
            if node.epoch != epoch:
                return
            self._emit(node, '%s login: ' % node.hostname)
            node.set_mode('running')
            self.changed()
        self.publish()

    def _console_lines(self, node, epoch, lines, delay, then=None):
        """Print lines one by one (a UART is not instantaneous), then call then(node, epoch)."""
        def step(i):
            with self.lock:
                if node.epoch != epoch:
                    return
                if i < len(lines):
                    self._emit(node, lines[i] + '\n')
                    self.scheduler.call_later(LINE_GAP_S, step, i + 1)
                    return
            if then is not None:
                then(node, epoch)
        self.scheduler.call_later(delay, step, 0)

    def _emit(self, node, text):
        node.remember(text.replace('\n', '\r\n'))
        self.consoles[node.number].emit(text)

    def _power_off(self, node):
        node.new_epoch()
        self._drop_usb(node)
        node.set_mode('off')
        node.usb_boot_at_power_on = None
        node.payload = None
        node.hostname = None

    def _hold_in_reset(self, node):
        node.new_epoch()
        self._drop_usb(node)
        node.set_mode('reset')

    def _drop_usb(self, node):
        """The node leaves the USB bus: its disk and device entries go, its writers are cut off."""
        if node.disk:
            self._remove_disk(node)
        self.fakesys.remove_usb_device(node.usb_path)

    def _remove_disk(self, node):
        name = node.disk
        node.disk = None
        self.fakesys.remove_disk(name)
        # Writes through an fd opened before the disk went away must not reach the eMMC.
        if disks.detach_if_open(node.emmc_path):
            LOG.info('node %d: %s was open at removal: eMMC image detached from its writers', node.number, name)

    # -- USB boot ----------------------------------------------------------------------------------
    def _hub_enumerated(self):
        """The hub shows on the Pi's bus: out of reset and not D+/D- swapped upstream (strict_hub only)."""
        if not self.options.strict_hub:
            return True
        return not self.options.jumpers and not self.usb_hub.get('upstream_swapped', True)

    def _port_works(self, port):
        if not self.options.strict_hub:
            return True
        return self._hub_enumerated() and self.usb_hub.get('port_works', {}).get(str(port), False)

    def _usb_tree(self):
        """The hub and the RP2040 behind it as the hub's state says (nodes come and go with USB boot)."""
        if getattr(self, 'fakesys', None) is None:
            return
        hub_path = self.options.hub_path
        up = self._hub_enumerated()
        if not up:
            if hub_path in self.fakesys.usb_devices:
                for node in self.nodes.values():
                    self._drop_usb(node)
                self.fakesys.remove_hub(hub_path)
                self.fakesys.unlink_dev('ttyACM0')
                self._hub_shown = None
            self._rp2040_shown = None
            self.rp2040_stdio.visible('usb', False)
            return
        configured = self.usb_hub.get('image') != 'blank'
        shown = (self.usb_hub.get('vid'), self.usb_hub.get('pid'), self.usb_hub.get('did')) if configured else None
        if hub_path not in self.fakesys.usb_devices or getattr(self, '_hub_shown', None) != shown:
            for node in self.nodes.values():
                self._drop_usb(node)
            vid, pid, did = shown or ('0424', '2517', '0000')
            self.fakesys.add_hub(hub_path, vid, pid, did, (self.usb_hub.get('strings') or {}) if configured else None)
            self._hub_shown = shown
        self._rp2040_device()

    def _rp2040_device(self):
        """The RP2040 at the hub's port 1 as its mode says: CDC console, boot ROM drive, or nothing
        (held in reset, or its port not working). The USB console's pty name follows the CDC device."""
        rp2040_path = self.rp2040_usb_path()
        want = self.rp2040_mode if self._port_works(RP2040_PORT) and self.rp2040_mode != 'reset' else None
        if getattr(self, '_rp2040_shown', None) != want or (want and rp2040_path not in self.fakesys.usb_devices):
            if rp2040_path in self.fakesys.usb_devices:
                self.fakesys.remove_usb_device(rp2040_path)
                self.fakesys.unlink_dev('ttyACM0')
            if want == 'firmware':
                self.fakesys.add_rp2040(rp2040_path, tty='ttyACM0')
                self.fakesys.link_dev('ttyACM0', self.path('rp2040'))
            elif want == 'bootrom':
                device_dir = self.fakesys.add_rp2040(rp2040_path, bootsel=True)
                # The mass-storage interface is rebuilt with its SCSI disk below it.
                shutil.rmtree(os.path.join(device_dir, '%s:1.0' % rp2040_path))
                self.fakesys.add_usb_disk(rp2040_path, self.bootrom_drive, 'RPI', 'RP2', '3')
            self._rp2040_shown = want
        self.rp2040_stdio.visible('usb', want == 'firmware')

    def _usb_reachable(self, node):
        return self._port_works(NODE_PORTS[node.number])

    def rpiboot_eligible(self, node):
        return node.powered and node.mode == 'usb_rom' and not node.unplugged and self._usb_reachable(node)

    def rpiboot(self, usb_path=None, port_number=None, payload='mass-storage-gadget'):
        """Serve one device in USB boot, as one rpiboot process does. Returns the node number or None."""
        with self.lock:
            for n in NODES:
                node = self.nodes[n]
                if usb_path is not None and node.usb_path != usb_path:
                    continue
                if port_number is not None and node.usb_path.rsplit('.', 1)[-1] != str(port_number):
                    continue
                if not self.rpiboot_eligible(node):
                    continue
                epoch = node.epoch
                node.payload = payload
                node.set_mode('usb_loading')
                # The boot ROM's device leaves the bus; the payload enumerates anew later.
                self.fakesys.remove_usb_device(node.usb_path)
                self._console_lines(node, epoch, bootlog.usb_payload_lines(node.number, payload), 0.05)
                self.scheduler.call_later(self.options.disk_delay, self._payload_up, node, epoch)
                self.changed()
                LOG.info('rpiboot served node %d (%s) with %s', n, node.usb_path, payload)
                break
            else:
                return None
        self.publish()
        return n

    def _payload_up(self, node, epoch):
        with self.lock:
            if node.epoch != epoch or node.unplugged:
                return
            serial = bootlog.SERIALS.get(node.number)
            if node.payload == 'mass-storage-gadget':
                self.fakesys.add_usb_device(node.usb_path, '1d6b', '0104', 'Mass Storage Gadget', 'Raspberry Pi', serial)
                node.disk = self.fakesys.add_usb_disk(node.usb_path, node.emmc_path, 'Linux', 'mmcblk0', '0606')
                node.set_mode('usb_msd')
            elif node.payload == 'msd':
                self.fakesys.add_usb_device(node.usb_path, '0a5c', '2764', 'RPi-MSD-', 'Raspberry Pi', serial)
                node.disk = self.fakesys.add_usb_disk(node.usb_path, node.emmc_path, 'RPi-MSD-', '0001', '1.00')
                node.set_mode('usb_msd')
            else:
                node.set_mode('usb_payload')
            self.changed()
            LOG.info('node %d: payload %s up, disk %s', node.number, node.payload, node.disk)
        self.publish()

    def unplug(self, n):
        with self.lock:
            node = self.nodes[n]
            name = node.disk
            node.unplugged = True
            node.new_epoch()
            detached = False
            if name:
                node.disk = None
                self.fakesys.remove_disk(name)
            self.fakesys.remove_usb_device(node.usb_path)
            self.changed()
        if name:
            detached = disks.detach_if_open(node.emmc_path)
        self.publish()
        return {'disk': name, 'detached': detached}

    def halt(self, n):
        """The node's OS halted (poweroff with EN still high): the SoC stops, the card stays powered."""
        with self.lock:
            node = self.nodes[n]
            if not node.powered:
                raise ValueError('node %d is not powered; only a powered node can halt' % n)
            node.new_epoch()
            self._drop_usb(node)
            self._emit(node, '[  OK  ] Reached target System Power Off.\nreboot: Power down\n')
            node.set_mode('halted')
            node.halts += 1
            self.changed()
        self.publish()
        return {'mode': 'halted', 'halts': node.halts}

    # -- power cycle ------------------------------------------------------------------------------
    def power_cycle(self, keep_options=False, wipe_emmc=False, wipe_eeprom=False, clear_decoys=False, clear_log=False):
        """The whole hat loses power and comes back: as after a fresh start, minus the processes.

        Non-volatile things stay (EEPROM, eMMC) unless wipe_eeprom (blank, all 0xFF) or wipe_emmc
        (all zero, sparse); runtime options return to the
        start options unless keep_options. Made for tests that share one simulator.
        """
        with self.lock:
            if not keep_options:
                self.options.update(dict((k, v) for k, v in self.initial_options.items()
                                         if self.options.FIELDS[k][2]))
            now = time.monotonic()
            for n, node in self.nodes.items():
                node.new_epoch()
                self._drop_usb(node)
                self._power_off(node)
                node.en, node.run, node.nrpiboot = False, True, True
                node.present = n not in self.options.empty_slots
                node.boots = 0
                node.unplugged = False
                node.console_tail = ''
                node.temperature_c = self.options.ambient_c
                if wipe_emmc:
                    os.truncate(node.emmc_path, 0)
                    os.truncate(node.emmc_path, self.options.emmc_size)
            self.rp2040.channel = 0
            self.gpio.driven.clear()
            self.rp2040_mode = 'firmware'
            self.rp2040_boots = 1
            self.rp2040_firmware = None
            self._uf2_reboot_pending = False
            self.emc2301 = EMC2301(random.Random(2301))
            self.ina226 = INA226(self._input_measure, random.Random(226))
            self.tmp117 = dict((n, TMP117(self._temperature_of(n), now)) for n in NODES if self.nodes[n].present)
            data = b'\xff' * EEPROM_SIZE if wipe_eeprom else bytes(self.eeprom.data)
            self.eeprom = M24LC08(data, self.options.write_cycle_ms / 1000.0, self._eeprom_committed)
            if wipe_eeprom:
                self._eeprom_committed(self.eeprom)
            self.bus_host.transactions = self.bus_host.nacks = 0
            self.bus_hub.transactions = self.bus_hub.nacks = 0
            if clear_log:
                self._rp2040_log.clear()
                self._rp2040_log_total = 0
            if clear_decoys:
                for decoy in self.decoys.values():
                    self.fakesys.remove_disk(decoy['disk'])
                    if decoy['usb_path']:
                        self.fakesys.remove_usb_device(decoy['usb_path'])
                    os.unlink(decoy['backing'])
                self.decoys = {}
            self.hub_loads = 0
            self._hub_load()
            self.changed()
        self.publish()

    # -- decoys ------------------------------------------------------------------------------------
    def make_decoys(self, usb_paths=('1-1.4',)):
        with self.lock:
            taken = set(node.usb_path for node in self.nodes.values())
            taken.add('%s.%d' % (self.options.hub_path, RP2040_PORT))
            for usb_path in usb_paths:
                if usb_path in taken:
                    raise ValueError('decoy USB path %s is a node\'s or the RP2040\'s path' % usb_path)
            os.makedirs(self.path('decoys'), exist_ok=True)
            wanted = [('usb-%s' % p, 'usb', p) for p in usb_paths] + [('loop0', 'loop', None), ('mmcblk0', 'mmc', None)]
            for key, kind, usb_path in wanted:
                if key in self.decoys:
                    continue
                backing = self.path('decoys', '%s.img' % key)
                digest = disks.make_decoy_image(backing, key)
                if kind == 'usb':
                    self.fakesys.add_usb_device(usb_path, '1d6b', '0104', 'Mass Storage Gadget', 'Raspberry Pi', 'decoy')
                    name = self.fakesys.add_usb_disk(usb_path, backing, 'Linux', 'mmcblk0', '0606')
                elif kind == 'loop':
                    name = self.fakesys.add_loop('loop0', backing)
                else:
                    name = self.fakesys.add_mmc('mmcblk0', backing)
                self.decoys[key] = {'kind': kind, 'disk': name, 'usb_path': usb_path, 'backing': backing, 'sha256': digest}
            self.changed()
        self.publish()
        return dict(self.decoys)

    # -- hub ---------------------------------------------------------------------------------------
    def _hub_load(self):
        """The USB2517 reads its configuration from EEPROM block 0 when it leaves reset."""
        self.usb_hub = usb2517.decode(self.eeprom.data[:256])
        self.usb_hub['loaded_at'] = time.time()
        self.hub_loads += 1
        self._usb_tree()

    def hub_reset(self):
        with self.lock:
            self._hub_load()
            self.changed()
        self.publish()
        return dict(self.usb_hub, in_reset=self.options.jumpers, loads=self.hub_loads)

    def set_options(self, values):
        with self.lock:
            old_jumpers = self.options.jumpers
            old_empty = set(self.options.empty_slots)
            changed = self.options.update(values)
            if 'write_cycle_ms' in changed:
                self.eeprom.write_cycle_s = self.options.write_cycle_ms / 1000.0
            if old_jumpers and not self.options.jumpers:
                self._hub_load()  # removing the jumpers releases the hub's reset
            elif 'jumpers' in changed or 'strict_hub' in changed:
                self._usb_tree()  # fitting them holds it in reset: it leaves the bus
            if 'empty_slots' in changed:
                self._set_slots(old_empty, set(self.options.empty_slots))
            self.emc2301.fan.blocked = self.options.fan_blocked
            self.changed()
        self.publish()
        return changed

    def _set_slots(self, old_empty, new_empty):
        now = time.monotonic()
        for n in NODES:
            node = self.nodes[n]
            if n in new_empty and n not in old_empty:
                if node.powered:
                    self._power_off(node)
                node.present = False
                self.tmp117.pop(n, None)
            elif n in old_empty and n not in new_empty:
                node.present = True
                node.temperature_c = self.options.ambient_c
                # The card's sensor powers up with the card: 0x8000 until its first conversion.
                self.tmp117[n] = TMP117(self._temperature_of(n), now)
                if node.en and node.run:
                    self._boot(node)

    # -- I2C ---------------------------------------------------------------------------------------
    def _resolve_host(self, addr):
        if addr in self.options.silent_addresses:
            return None
        if addr == INA226_ADDRESS:
            return self.ina226
        if addr == EMC2301_ADDRESS:
            return self.emc2301
        for n, a in TMP117_ADDRESSES.items():
            if a == addr:
                return self.tmp117.get(n)
        if self.options.jumpers and BASE_ADDRESS <= addr < BASE_ADDRESS + 4:
            return self.eeprom.block(addr - BASE_ADDRESS)
        return None

    def _resolve_hub(self, addr):
        if self.options.jumpers and BASE_ADDRESS <= addr < BASE_ADDRESS + 4:
            return self.eeprom.block(addr - BASE_ADDRESS)
        return None

    def _initial_eeprom(self):
        for path in (self.options.eeprom_image, self.path('eeprom.bin')):
            if path and os.path.exists(path):
                with open(path, 'rb') as f:
                    data = f.read()
                if len(data) != EEPROM_SIZE:
                    raise ValueError('EEPROM image %s is %d bytes, not %d' % (path, len(data), EEPROM_SIZE))
                return data
            if path == self.options.eeprom_image and path:
                raise ValueError('EEPROM image %s does not exist' % path)
        return b'\xff' * EEPROM_SIZE

    def _eeprom_committed(self, chip):
        # The EEPROM is non-volatile: it outlives a simulator restart in the same directory.
        tmp = self.path('.eeprom.bin.tmp')
        with open(tmp, 'wb') as f:
            f.write(bytes(chip.data))
        os.replace(tmp, self.path('eeprom.bin'))
        self.changed()

    # -- physics -----------------------------------------------------------------------------------
    def _temperature_of(self, n):
        return self.nodes[n].sensor_temperature

    def input_current(self):
        # Each card's eFuse sits on the 12 V input: its current is its IMON voltage times its own gain.
        nodes = sum(node.millivolts() * self.options.imon_gains[n - 1] for n, node in self.nodes.items()) / 1000.0
        fan = FAN_MAX_A * self.emc2301.fan.airflow() ** 2
        return HAT_OVERHEAD_A + nodes + fan

    def _input_measure(self):
        amps = self.input_current()
        return amps, SUPPLY_V - SUPPLY_OHMS * amps, self.options.shunt_ohms

    def _tick(self):
        with self.lock:
            now = time.monotonic()
            dt = now - self._last_tick
            self._last_tick = now
            self.emc2301.step(now, dt)
            airflow = self.emc2301.fan.airflow()
            for node in self.nodes.values():
                node.step(dt, self.options.ambient_c, airflow)
            self._uf2_check()
            self._ticks += 1
            if self._ticks % PUBLISH_EVERY_TICKS == 0:
                self.changed()  # temperatures and fan speed drift continuously: publish once a second
        if self._ticks % PUBLISH_EVERY_TICKS == 0:
            self.publish()

    # -- inspection --------------------------------------------------------------------------------
    def hash_file(self, path):
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        st = os.stat(path)
        return {'sha256': digest.hexdigest(), 'size': st.st_size, 'allocated': st.st_blocks * 512}
