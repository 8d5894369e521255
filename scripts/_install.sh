# shellcheck shell=bash
# Sourced by scripts/check and scripts/demo: install what edgepipe needs on a fresh Debian
# machine, then make .venv with the project installed editable. Idempotent and quiet when
# everything is already there (no apt-get update, no network for apt).

EDGEPIPE_APT_PACKAGES=(mosquitto mosquitto-clients influxdb chromium)

_apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

_have_python_venv() {
    command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

ensure_system_packages() {
    local missing=() pkg
    for pkg in "${EDGEPIPE_APT_PACKAGES[@]}"; do
        _apt_installed "$pkg" || missing+=("$pkg")
    done
    # mosquitto lives in /usr/sbin, which is not on every PATH.
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        _apt_installed mosquitto && missing+=(mosquitto)
    fi
    if ! command -v influxd >/dev/null 2>&1; then
        _apt_installed influxdb && missing+=(influxdb)
    fi
    if ! _have_python_venv; then
        missing+=(python3 python3-venv)
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "missing system packages: ${missing[*]}" >&2
            echo "run as root: apt-get install -y ${missing[*]}" >&2
            return 1
        fi
    fi
    echo "installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    # --reinstall covers a package that is installed but lost its binary.
    "${sudo[@]}" apt-get install -y -qq --reinstall "${missing[@]}" >/dev/null
}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv" >&2
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install -qq -e '.[dev]'
}
