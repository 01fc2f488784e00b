#!/usr/bin/env bash
# Bootstrap a bench host from nothing, idempotently: the project's virtualenv
# (.venv at the repository root, with the dev, provision and vm extras) and the
# Ansible provisioning (Debian packages, a running Docker engine, libvirtd with
# the QEMU driver).
#
# The vm extra (libvirt-python) compiles against libvirt-dev and pkg-config,
# which the playbook installs: on a new host the venv first gets the other
# extras (ansible among them), the playbook runs, and then the vm extra is
# added. Once libvirt-dev is installed, step 2 installs all extras at once and
# step 4 has nothing to do.
#
# Usage, as root, from anywhere:  bash ansible/up.sh
# BENCH_UP_VERBOSE=1 also streams the playbook's output to the terminal.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

venv="$repo_root/.venv"
python="${BENCH_PYTHON:-python3}"
log_dir=/var/log/bench
playbook_log="$log_dir/provision.log"
step="starting"

say() { printf 'up.sh: %s\n' "$*"; }

on_error() {
    local rc=$?
    printf 'up.sh: FAILED during "%s" (exit %s)\n' "$step" "$rc" >&2
    exit "$rc"
}
trap on_error ERR

now_ms() { date +%s%3N; }
step_started_ms=0
begin() {
    step="$1"
    step_started_ms="$(now_ms)"
    say "$step ..."
}
done_step() {
    local elapsed_ms=$(( $(now_ms) - step_started_ms ))
    say "$step: ${1:-done} ($(( elapsed_ms / 1000 )).$(printf '%03d' $(( elapsed_ms % 1000 ))) s)"
}

if [[ "$(id -u)" -ne 0 ]]; then
    say "FAILED: must run as root (installs Debian packages, starts dockerd and libvirtd)" >&2
    exit 1
fi

# Step 1: a Python that can build a virtualenv. Debian's system python3
# ships venv's ensurepip only in the python3-venv package.
begin "1/5 python venv support"
venv_works() {
    "$python" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}
if venv_works; then
    done_step "$("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
else
    say "  $python cannot create a virtualenv (3.11+ with ensurepip); installing python3-venv"
    apt_output="$(mktemp)"
    if ! { apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
         } >"$apt_output" 2>&1; then
        cat "$apt_output" >&2
        say "FAILED: could not install python3-venv with apt-get (output above)" >&2
        rm -f "$apt_output"
        exit 1
    fi
    rm -f "$apt_output"
    if ! venv_works; then
        say "FAILED: $python still cannot create a virtualenv; set BENCH_PYTHON to a Python 3.11+ with venv" >&2
        exit 1
    fi
    done_step "installed python3-venv"
fi

# Step 2: the project's virtualenv. A venv whose interpreter or pip is broken
# (e.g. left half-made by a failed ensurepip) is rebuilt.
begin "2/5 virtualenv $venv"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import pip' 2>/dev/null; then
    venv_note="reused"
else
    "$python" -m venv --clear "$venv"
    venv_note="created"
fi
"$venv/bin/python" -m pip install -qq --disable-pip-version-check --upgrade pip
extras="dev,provision"
if pkg-config --exists libvirt 2>/dev/null; then
    extras="$extras,vm"
fi
"$venv/bin/python" -m pip install -qq --disable-pip-version-check -e ".[$extras]"
# Read the whole version text: a `| head -n 1` would SIGPIPE ansible.
ansible_version="$("$venv/bin/ansible-playbook" --version)"
done_step "$venv_note, extras $extras, ${ansible_version%%$'\n'*}"

# Step 3: provision this host.
begin "3/5 ansible-playbook provision.yml"
export ANSIBLE_CONFIG="$repo_root/ansible/ansible.cfg"
export PATH="$venv/bin:$PATH"
mkdir -p "$log_dir"
playbook_rc=0
if [[ "${BENCH_UP_VERBOSE:-0}" == 1 ]]; then
    ansible-playbook -i ansible/inventory/local.yml ansible/provision.yml 2>&1 \
        | tee "$playbook_log" || playbook_rc=$?
else
    ansible-playbook -i ansible/inventory/local.yml ansible/provision.yml \
        >"$playbook_log" 2>&1 || playbook_rc=$?
fi
if [[ "$playbook_rc" -ne 0 ]]; then
    cat "$playbook_log" >&2
    say "FAILED: ansible-playbook exited $playbook_rc (full output above and in $playbook_log)" >&2
    exit "$playbook_rc"
fi
recap="$(grep -E '^localhost +:' "$playbook_log" | tr -s ' ' || true)"
done_step "${recap:-no PLAY RECAP found, see $playbook_log}"

# Step 4: the vm extra, now that the playbook installed what it compiles
# against; then libvirtd answers through it (the playbook waited for it).
begin "4/5 libvirt-python and libvirtd"
if "$venv/bin/python" -c 'import libvirt' 2>/dev/null; then
    vm_note="libvirt-python present"
else
    if ! "$venv/bin/python" -m pip install -qq --disable-pip-version-check -e '.[dev,provision,vm]'; then
        say "FAILED: could not build libvirt-python (needs libvirt-dev, pkg-config, gcc and $python's C headers)" >&2
        exit 1
    fi
    vm_note="installed libvirt-python"
fi
libvirt_versions="$("$venv/bin/python" -c '
import libvirt
conn = libvirt.open("qemu:///system")
def dotted(n): return "%d.%d.%d" % (n // 1000000, n // 1000 % 1000, n % 1000)
print("libvirt", dotted(conn.getLibVersion()), "QEMU", dotted(conn.getVersion()))
conn.close()
')"
done_step "$vm_note, $libvirt_versions, libvirtd pid $(cat /var/run/libvirtd.pid 2>/dev/null || echo unknown)"

# Step 5: the engine answers (the playbook waited for it; this shows it).
begin "5/5 docker engine"
server_version="$("$venv/bin/python" -c '
import docker
print(docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto").version()["Version"])
')"
done_step "ready, engine $server_version, pid $(cat /var/run/docker.pid)"
