"""Many hosts: the lab fleet (Ansible runs it) and a second lab host bench can make itself.

``labhost``: a Debian guest with its own kernel, systemd and cgroup v2, built once as a
cached artefact and booted under QEMU with sshd on a loopback port (``labhost_recipe``:
what the image is made of, its cache key; ``labhost_image``: the image built and cached;
``labhost_cleanup``: ``bench clean`` stopping them). ``shipping``: what the
controller builds once and ships to every host (bench's wheels, the static probe and
helper, the probe image). ``campaign``: ``ansible-playbook
ansible/fleet.yml`` with a campaign id; ``merge``: what came back, merged.
"""
