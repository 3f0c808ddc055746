# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make demo`: reflash the simulated hat's four nodes with a generated image, then show the hat.

Starts the simulator in .build/demo/hat, writes an inventory whose controller is this machine and
whose hat is the simulator, runs playbooks/reflash.yml twice (the second run changes nothing) and
playbooks/status.yml, and stops the simulator whatever happens.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(REPO, '.build', 'demo')
HAT = os.path.join(WORK, 'hat')
IMAGE = os.path.join(WORK, 'image', 'pios-mini.img')

INVENTORY = """\
controller:
  hosts:
    simulated-controller:
      ansible_connection: local
      ansible_python_interpreter: {python}
      hat_port: {hat}/rp2040
      hat_i2c_bus: unix:{hat}/i2c-1.sock
      hat_lock_dir: {hat}/lock
      hat_state_dir: {hat}/state
      hat_rpiboot: {hat}/rpiboot
      hat_rpiboot_payload: {hat}/usbboot/mass-storage-gadget64
      hat_root: {hat}
      hat_consoles: {{1: {hat}/console1, 2: {hat}/console2, 3: {hat}/console3, 4: {hat}/console4}}
"""


def step(text):
    print('\n=== %s' % text, flush=True)


def run(argv, **kwargs):
    subprocess.run(argv, check=True, cwd=REPO, **kwargs)


def simulator(action):
    run([sys.executable, '-m', 'hatsim', action, '--dir', HAT], stdout=subprocess.DEVNULL)


def main():
    if os.path.exists(os.path.join(HAT, 'hatsim.pid')):
        subprocess.run([sys.executable, '-m', 'hatsim', 'stop', '--dir', HAT], cwd=REPO, stdout=subprocess.DEVNULL, check=False)
    subprocess.run(['rm', '-rf', HAT], check=True)
    os.makedirs(os.path.dirname(IMAGE), exist_ok=True)

    step('generating a small Raspberry Pi OS shaped image, its .bmap and .xz')
    if not os.path.exists(IMAGE + '.xz'):
        run([sys.executable, os.path.join('tools', 'mkimage.py'), '-o', IMAGE])
    inventory = os.path.join(WORK, 'inventory.yml')
    with open(inventory, 'w') as f:
        f.write(INVENTORY.format(python=sys.executable, hat=HAT))

    step('starting the simulated hat in %s' % os.path.relpath(HAT, REPO))
    simulator('start')
    try:
        playbook = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory]
        flash = ['-e', 'image=%s.xz' % IMAGE, '-e', 'bmap=%s.bmap' % IMAGE,
                 '-e', 'reflash_wait_for=login:', '-e', 'reflash_stagger=0.2']
        step('fan: closed-loop 3000 rpm')
        run([os.path.join(os.path.dirname(sys.executable), 'ansible'), '-i', inventory, 'controller', '-m', 'minicluster.cm4.fan',
             '-a', 'mode=rpm target_rpm=3000 i2c_bus=unix:%s/i2c-1.sock' % HAT])
        step('ansible-playbook playbooks/reflash.yml: flash all four nodes')
        run(playbook + ['playbooks/reflash.yml'] + flash)
        step('ansible-playbook playbooks/reflash.yml again: nothing to do')
        run(playbook + ['playbooks/reflash.yml'] + flash)
        step('ansible-playbook playbooks/status.yml')
        run(playbook + ['playbooks/status.yml'])
    finally:
        step('stopping the simulated hat')
        simulator('stop')


if __name__ == '__main__':
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit('demo: %s failed with exit code %d' % (' '.join(exc.cmd[:3]), exc.returncode))
