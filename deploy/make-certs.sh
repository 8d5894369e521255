#!/bin/sh
# A private CA and a server certificate for the broker's TLS listener (RELIABILITY.md S5).
#
#   sh deploy/make-certs.sh OUTDIR [DNS_NAME...]
#
# Writes OUTDIR/ca.crt, ca.key, server.crt, server.key; the server certificate names
# localhost, 127.0.0.1 and every DNS_NAME (compose passes "mosquitto"). Existing files are
# kept, so running it again never invalidates the certificates clients already trust.
# compose.yaml runs it once in the `certs` service; tests/security/test_tls.py runs the
# same script. For production use your own CA: the broker only needs the three PEM files.
set -eu
out=${1:?usage: make-certs.sh OUTDIR [DNS_NAME...]}
shift
mkdir -p "$out"
if [ -s "$out/server.crt" ] && [ -s "$out/server.key" ] && [ -s "$out/ca.crt" ]; then
    echo "make-certs: $out already has certificates; kept" >&2
    exit 0
fi
san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do san="$san,DNS:$name"; done
days=${CERT_DAYS:-825}
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days "$days" -subj "/CN=edgepipe private CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -subj "/CN=${1:-localhost}" -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -sha256 -days "$days" -extfile "$out/server.ext" \
    -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"
chmod 644 "$out/ca.crt" "$out/server.crt"
# The broker reads the key after dropping to its own user (uid 1883 in eclipse-mosquitto).
if [ "$(id -u)" = 0 ] && [ -n "${KEY_OWNER:-1883}" ]; then chown "${KEY_OWNER:-1883}" "$out/server.key"; fi
echo "make-certs: wrote $out/ca.crt and a server certificate for $san" >&2
