"""Stand-in for get-pip.py: bootstrap pip with ensurepip, then install what was asked.

ansible-test runs this file (seeded into its cache) to bootstrap pip in the environments it builds.
"""
import os
import subprocess
import sys


def main():
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
    # ensurepip points PIP_CONFIG_FILE at /dev/null, which would hide the machine's pip configuration.
    env = dict(os.environ)
    env.pop('PIP_CONFIG_FILE', None)
    args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
    if args:
        subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args, env=env)


if __name__ == '__main__':
    main()
