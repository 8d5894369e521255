#!/bin/sh
# The broker's password file, hashed by mosquitto_passwd ($7$, PBKDF2-SHA512; RELIABILITY.md S1).
#
#   sh deploy/make-passwd.sh OUTFILE
#
# One account per process (use_username_as_clientid makes the account the client id, so two
# processes sharing one would log each other out). Passwords come from the environment
# (compose passes them from .env, see deploy/make-env.sh); a missing one stops the script.
# Device accounts are added the same way: mosquitto_passwd -b OUTFILE DEVICE_ID PASSWORD.
set -eu
out=${1:?usage: make-passwd.sh OUTFILE}
tmp="$out.new"
rm -f "$tmp"
touch "$tmp"
chmod 600 "$tmp"
add() {
    # A "/", "+" or "#" in a name would stretch the ACL's %u over topic levels (S4).
    case "$1" in
        "" | *[!A-Za-z0-9_.-]*) echo "make-passwd: bad account name '$1'" >&2; exit 1 ;;
    esac
    if [ "${#1}" -gt 64 ]; then echo "make-passwd: account name over 64 characters: $1" >&2; exit 1; fi
    if [ -z "$2" ]; then echo "make-passwd: no password for $1" >&2; exit 1; fi
    mosquitto_passwd -b "$tmp" "$1" "$2"
}
add sim.1 "${MQTT_PASSWORD_SIM:-}"
add edge.farm "${MQTT_PASSWORD_EDGE_FARM:-}"
add edge.retail "${MQTT_PASSWORD_EDGE_RETAIL:-}"
add edge.city "${MQTT_PASSWORD_EDGE_CITY:-}"
add cloud.1 "${MQTT_PASSWORD_CLOUD_1:-}"
add analyst.1 "${MQTT_PASSWORD_ANALYST_1:-}"
add dashboard.1 "${MQTT_PASSWORD_DASHBOARD:-}"
add monitor.1 "${MQTT_PASSWORD_MONITOR:-}"
# The broker reads the file after dropping to its own user (uid 1883 in eclipse-mosquitto).
if [ "$(id -u)" = 0 ] && [ -n "${FILE_OWNER:-1883}" ]; then chown "${FILE_OWNER:-1883}" "$tmp"; fi
mv "$tmp" "$out"
echo "make-passwd: wrote $(wc -l < "$out") accounts to $out" >&2
