#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: usb2517_eeprom
short_description: Configure the cluster hat's USB2517 hub through its 24LC08 EEPROM
version_added: 0.1.0
description:
  - The hat's USB2517 7-port hub loads its configuration from a 24LC08 I2C EEPROM (block 0, address
    0x50) whenever it leaves reset. The board routes every downstream D+/D- pair reversed, so without
    the right image (the swap bits set) no node's USB works.
  - Builds the 256-byte image from named fields (every field defaults to the hat's stock value) or
    takes a raw image from O(src), compares it with the EEPROM, writes only the 16-byte pages that
    differ, reads them back and verifies.
  - 'The EEPROM is on the hub''s own bus. It reaches the controller only while the three jumpers on the
    back of the hat are fitted; one of them also holds the hub in reset. Procedure: fit the jumpers,
    run this module, remove the jumpers. The hub leaves reset and loads the new configuration.'
  - Input is checked before the bus is opened; bad input fails and writes nothing.
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.i2c
attributes:
  check_mode:
    support: full
    description: Reads the EEPROM and reports which fields and pages would change; writes nothing.
  diff_mode:
    support: full
    description: Shows the fields that change, by name, before and after.
options:
  address:
    description:
      - I2C address of the EEPROM block that holds the hub configuration (block 0 of the 24LC08).
    type: int
    default: 0x50
  src:
    description:
      - A raw 256-byte configuration image on the controller, written as it is.
      - Mutually exclusive with the field options.
    type: path
  backup:
    description:
      - When the EEPROM changes, save the 256 bytes it held before to this path on the controller first.
    type: path
  self_powered:
    description:
      - Sets (V(true)) or clears (V(false)) the self-powered bit (SELF_BUS_PWR) of O(cfg1).
      - Unset keeps the bit as O(cfg1) has it (the stock configuration is self-powered).
    type: bool
  vid:
    description:
      - USB vendor ID. Default (stock) V(0x0424).
    type: int
  pid:
    description:
      - USB product ID. Default (stock) V(0x2517).
    type: int
  did:
    description:
      - USB device release number (bcdDevice). Default (stock) V(0x0000).
    type: int
  cfg1:
    description:
      - Raw CFG_DATA_BYTE_1 (self/bus power, high-speed disable, multi-TT, EOP, current sense, port
        power switching), for experts. Default (stock) V(0x95).
    type: int
  cfg2:
    description:
      - Raw CFG_DATA_BYTE_2 (dynamic power, over-current timer, compound device). Default (stock) V(0x20).
    type: int
  cfg3:
    description:
      - Raw CFG_DATA_BYTE_3. Bit 0 enables the strings, bit 3 enables O(port_remap). Default (stock) V(0x01).
    type: int
  non_removable_ports:
    description:
      - Downstream ports (1 to 7) with a non-removable device. Default (stock) none.
    type: list
    elements: int
  disabled_ports_self:
    description:
      - Downstream ports (1 to 7) disabled when the hub is self-powered. Default (stock) none.
    type: list
    elements: int
  disabled_ports_bus:
    description:
      - Downstream ports (1 to 7) disabled when the hub is bus-powered. Default (stock) none.
    type: list
    elements: int
  max_power_self_ma:
    description:
      - Maximum current the hub reports drawing from upstream when self-powered (MAXPS), mA, even, 0 to 510.
        Default (stock) V(2).
    type: int
  max_power_bus_ma:
    description:
      - The same when bus-powered (MAXPB), mA, even, 0 to 510. Default (stock) V(100).
    type: int
  hub_current_self_ma:
    description:
      - Current of the hub controller itself when self-powered (HCMCS), mA, even, 0 to 510. Default (stock) V(2).
    type: int
  hub_current_bus_ma:
    description:
      - The same when bus-powered (HCMCB), mA, even, 0 to 510. Default (stock) V(100).
    type: int
  power_on_time_ms:
    description:
      - Time from a port's power switch turning on until its power is good (PWRT), ms, even, 0 to 510.
        Default (stock) V(100).
    type: int
  langid:
    description:
      - USB language ID of the strings. Default (stock) V(0x0000).
    type: int
  manufacturer:
    description:
      - Manufacturer string, at most 31 characters. Default V(minicluster).
    type: str
  product:
    description:
      - Product string, at most 31 characters. Default (stock) V(RaspberryPiCluster).
    type: str
  serial:
    description:
      - Serial number string, 1 to 31 characters. Default (stock) V(00000000).
    type: str
  boost_upstream:
    description:
      - Upstream port signal boost, 0 (normal) to 3. Default (stock) V(0).
    type: int
  boost:
    description:
      - Downstream port signal boost, port (1 to 7) to level (0 to 3). Default (stock) none.
    type: dict
  port_swap:
    description:
      - Ports whose D+/D- pair is swapped (PRTSP); 0 is the upstream port, 1 to 7 the downstream ports.
      - Default (stock) V([1, 2, 3, 4, 5, 6, 7]). The board routes every downstream pair reversed;
        without the swap no node's USB works.
    type: list
    elements: int
  port_remap:
    description:
      - Logical port number (1 to 7; 0 disables the port) of each physical downstream port (1 to 7).
        Takes effect only when bit 3 of O(cfg3) is set. Default (stock) none.
    type: dict
  stcd:
    description:
      - Raw STCD byte (SMBus status and command). Default (stock) V(0).
    type: int
notes:
  - The hub reads the EEPROM only as it leaves reset. Remove the jumpers after writing so it does.
  - The RV(fields) returned use the option names above; port maps come back with string keys.
seealso:
  - module: minicluster.cm4.hat_info
'''

EXAMPLES = r'''
- name: Write the hat's stock hub configuration (jumpers fitted)
  minicluster.cm4.usb2517_eeprom:

- name: Set a serial number and our own manufacturer string, keeping a backup
  minicluster.cm4.usb2517_eeprom:
    manufacturer: Example Lab
    serial: "0042"
    backup: /var/backups/usb2517-eeprom.bin

- name: Disable downstream port 7 (no node on it)
  minicluster.cm4.usb2517_eeprom:
    disabled_ports_self: [7]

- name: Write a raw image
  minicluster.cm4.usb2517_eeprom:
    src: /root/usbHubEEPROM.bin

- name: Show what would change
  minicluster.cm4.usb2517_eeprom:
    serial: "0043"
  check_mode: true
  diff: true
'''

RETURN = r'''
changed:
  description: Whether the EEPROM was (in check mode, would be) written.
  returned: always
  type: bool
pages_written:
  description: Number of 16-byte pages written (in check mode, that would be written).
  returned: success
  type: int
  sample: 1
pages:
  description: Offsets of those pages in the EEPROM.
  returned: success
  type: list
  elements: int
  sample: [144]
fields:
  description: The configuration now in the EEPROM (in check mode, what it would be), decoded.
  returned: success
  type: dict
  sample:
    vid: 1060
    pid: 9495
    did: 0
    cfg1: 149
    cfg2: 32
    cfg3: 1
    non_removable_ports: []
    disabled_ports_self: []
    disabled_ports_bus: []
    max_power_self_ma: 2
    max_power_bus_ma: 100
    hub_current_self_ma: 2
    hub_current_bus_ma: 100
    power_on_time_ms: 100
    langid: 0
    manufacturer: minicluster
    product: RaspberryPiCluster
    serial: "00000000"
    boost_upstream: 0
    boost: {}
    port_swap: [1, 2, 3, 4, 5, 6, 7]
    port_remap: {}
    stcd: 0
image:
  description: The 256-byte image now in the EEPROM (in check mode, what it would be), hex.
  returned: success
  type: str
backup_file:
  description: Where the previous image was saved.
  returned: when O(backup) is set and the EEPROM changed outside check mode
  type: str
  sample: /var/backups/usb2517-eeprom.bin
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import eeprom24, usb2517
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import atomic_write
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c

FIELD_SPEC = dict(
    vid=dict(type='int'),
    pid=dict(type='int'),
    did=dict(type='int'),
    cfg1=dict(type='int'),
    cfg2=dict(type='int'),
    cfg3=dict(type='int'),
    non_removable_ports=dict(type='list', elements='int'),
    disabled_ports_self=dict(type='list', elements='int'),
    disabled_ports_bus=dict(type='list', elements='int'),
    max_power_self_ma=dict(type='int'),
    max_power_bus_ma=dict(type='int'),
    hub_current_self_ma=dict(type='int'),
    hub_current_bus_ma=dict(type='int'),
    power_on_time_ms=dict(type='int'),
    langid=dict(type='int'),
    manufacturer=dict(type='str'),
    product=dict(type='str'),
    serial=dict(type='str'),
    boost_upstream=dict(type='int'),
    boost=dict(type='dict'),
    port_swap=dict(type='list', elements='int'),
    port_remap=dict(type='dict'),
    stcd=dict(type='int'),
)


def unreachable_msg(bus_name, address):
    return ('the USB hub EEPROM at I2C bus %s address 0x%02x is unreachable: fit the three jumpers on the '
            'back of the hat (they connect the EEPROM to the Pi and hold the hub in reset), then run again'
            % (bus_name, address))


def desired_image(params):
    """(image bytes, fields) from src or from the field options. Raises ValueError, naming the field."""
    if params['src']:
        try:
            with open(params['src'], 'rb') as f:
                image = f.read(usb2517.IMAGE_SIZE + 1)
        except (IOError, OSError) as exc:
            raise ValueError('src: cannot read %s: %s' % (params['src'], to_native(exc.strerror or exc)))
        if len(image) != usb2517.IMAGE_SIZE:
            raise ValueError('src: %s is %s bytes, a USB2517 configuration image is exactly %d'
                             % (params['src'], len(image) if len(image) <= usb2517.IMAGE_SIZE else 'more than 256',
                                usb2517.IMAGE_SIZE))
        return image, usb2517.decode(image)
    given = dict((name, params[name]) for name in FIELD_SPEC if params[name] is not None)
    fields = usb2517.with_self_powered(usb2517.stock_fields(**given), params['self_powered'])
    fields = usb2517.normalize(fields)
    return usb2517.encode(fields), fields


def main():
    argument_spec = dict(
        i2c_bus=dict(type='raw', default='1'),
        address=dict(type='int', default=0x50),
        src=dict(type='path'),
        backup=dict(type='path'),
        self_powered=dict(type='bool'),
    )
    argument_spec.update(FIELD_SPEC)
    module = validate.ansible_module(
        AnsibleModule, argument_spec=argument_spec, supports_check_mode=True,
        mutually_exclusive=[('src', name) for name in list(FIELD_SPEC) + ['self_powered']])
    p = module.params

    # Everything is checked before the bus is opened: bad input writes nothing.
    try:
        i2c.parse_bus(p['i2c_bus'])
        # The 24LC08 answers at 0x50..0x53, one address per 256-byte block.
        validate.number('address', p['address'], 0x50, 0x53, integer=True)
        validate.regular_file('src', p['src'])
        validate.file_target('backup', p['backup'])
        for name in ('manufacturer', 'product', 'serial'):
            validate.text(name, p[name])
        desired, _fields = desired_image(p)
    except ValueError as exc:
        module.fail_json(msg=to_native(exc))

    try:
        bus = i2c.open_bus(p['i2c_bus'])
    except (i2c.I2CError, ValueError) as exc:
        module.fail_json(msg=to_native(exc))

    where = 'I2C bus %s address 0x%02x' % (bus.name, p['address'])
    result = dict(changed=False)
    try:
        eeprom = eeprom24.Eeprom24(bus, p['address'], size=usb2517.IMAGE_SIZE)
        current = eeprom.read(0, usb2517.IMAGE_SIZE)
        pages = [start for start, _chunk in eeprom24.differing_pages(0, current, desired)]
        before, after = usb2517.diff_fields(usb2517.decode(current), usb2517.decode(desired))
        if pages and not before:
            # Only bytes that no field covers differ (reserved bytes or string tails of a raw image).
            before, after = {'image': current.hex()}, {'image': desired.hex()}
        result.update(changed=bool(pages), pages=pages, pages_written=len(pages))
        if pages and not module.check_mode:
            if p['backup']:
                try:
                    atomic_write(p['backup'], current)
                except (IOError, OSError) as exc:
                    module.fail_json(msg='cannot save the backup of the USB hub EEPROM to %s: %s; nothing was written'
                                     % (p['backup'], to_native(exc)), **result)
                result['backup_file'] = p['backup']
            written = eeprom.update(0, desired, current=current)
            result.update(pages=written, pages_written=len(written))
            now = eeprom.read(0, usb2517.IMAGE_SIZE)
        else:
            now = desired if module.check_mode else current
    except eeprom24.EepromNotResponding:
        module.fail_json(msg=unreachable_msg(bus.name, p['address']), **result)
    except eeprom24.EepromError as exc:
        module.fail_json(msg='%s, %s: check the jumpers on the back of the hat and run again'
                         % (to_native(exc), where), page=exc.page, **result)
    except (i2c.I2CError, OSError) as exc:
        module.fail_json(msg='I2C transfer with the USB hub EEPROM at %s failed: %s' % (where, to_native(exc)), **result)
    finally:
        bus.close()

    result.update(fields=usb2517.for_json(usb2517.decode(now)), image=bytes(now).hex())
    if module._diff and result['changed']:
        result['diff'] = dict(before=usb2517.for_json(before), after=usb2517.for_json(after))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
