#!/usr/bin/env bash
# Write a CNCF distribution (docker-registry 2.8) config for a loopback test
# registry into STATE_DIR/config.yml, plus whatever the kind needs.
#
#   gen-config.sh KIND STATE_DIR PORT
#
# KIND:
#   plain     http, no auth
#   htpasswd  http + basic auth (bcrypt, `htpasswd -Bbn`); user/password in
#             STATE_DIR/credentials as "user:password" (KVPUSH_REGISTRY_USER /
#             KVPUSH_REGISTRY_PASSWORD override the defaults)
#   tls       https with a throw-away CA: STATE_DIR/ca.crt (trust this),
#             server.crt/server.key for 127.0.0.1 and localhost;
#             STATE_DIR/certs.d/ca.crt is a copy for `skopeo --cert-dir`
#   htpasswd-tls  both: basic auth behind https, as real registries serve it
#   readonly  http, storage.maintenance.readonly: pulls work, pushes fail
#   token     http + bearer token auth: the registry trusts JWTs (ES256)
#             signed by STATE_DIR/token-signer.key (cert token-signer.crt,
#             put it in the JWT's x5c header), issuer "kvpush-fixtures",
#             service "kvpush-registry", realm $KVPUSH_TOKEN_REALM. The Rust
#             harness (Registry::start(RegistryKind::Token)) runs the token
#             server; from the shell you need your own.
set -euo pipefail

kind=${1:?usage: gen-config.sh KIND STATE_DIR PORT}
state=${2:?usage: gen-config.sh KIND STATE_DIR PORT}
port=${3:?usage: gen-config.sh KIND STATE_DIR PORT}

mkdir -p "$state/data"
state=$(cd "$state" && pwd)

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "gen-config.sh: '$1' not found; install the Debian package '$2' (apt-get install $2)" >&2
        exit 1
    }
}

auth=""
tls=""
readonly_block=""

setup_htpasswd() {
    need htpasswd apache2-utils
    local user password
    user=${KVPUSH_REGISTRY_USER:-kvpush}
    password=${KVPUSH_REGISTRY_PASSWORD:-kvpush-secret-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')}
    htpasswd -Bbn "$user" "$password" >"$state/htpasswd" 2>/dev/null
    printf '%s:%s' "$user" "$password" >"$state/credentials"
    auth="auth:
  htpasswd:
    realm: kvpush-test-registry
    path: $state/htpasswd"
}

# A throw-away CA and a server certificate for 127.0.0.1 and localhost,
# made by openssl now (kept across restarts of the same STATE_DIR).
setup_tls() {
    need openssl openssl
    if [ ! -f "$state/server.crt" ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=kvpush test CA" \
            -keyout "$state/ca.key" -out "$state/ca.crt" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout "$state/server.key" -out "$state/server.csr" >/dev/null 2>&1
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$state/server.ext"
        openssl x509 -req -in "$state/server.csr" -CA "$state/ca.crt" -CAkey "$state/ca.key" \
            -CAcreateserial -days 7 -extfile "$state/server.ext" -out "$state/server.crt" >/dev/null 2>&1
        mkdir -p "$state/certs.d"
        cp "$state/ca.crt" "$state/certs.d/ca.crt"
    fi
    tls="  tls:
    certificate: $state/server.crt
    key: $state/server.key"
}

case "$kind" in
plain) ;;
htpasswd) setup_htpasswd ;;
tls) setup_tls ;;
htpasswd-tls)
    setup_tls
    setup_htpasswd
    ;;
readonly)
    readonly_block="  maintenance:
    readonly:
      enabled: true"
    ;;
token)
    need openssl openssl
    if [ ! -f "$state/token-signer.crt" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
            -subj "/CN=kvpush token signer" -keyout "$state/token-signer.key" \
            -out "$state/token-signer.crt" >/dev/null 2>&1
        # PKCS#8 PEM for the Rust token server.
        openssl pkcs8 -topk8 -nocrypt -in "$state/token-signer.key" -out "$state/token-signer.pk8" >/dev/null 2>&1
    fi
    realm=${KVPUSH_TOKEN_REALM:-http://127.0.0.1:1/token}
    if [ -z "${KVPUSH_TOKEN_REALM:-}" ]; then
        echo "gen-config.sh: KVPUSH_TOKEN_REALM not set; tokens will be requested from $realm, where nothing listens" >&2
    fi
    auth="auth:
  token:
    realm: $realm
    service: kvpush-registry
    issuer: kvpush-fixtures
    rootcertbundle: $state/token-signer.crt"
    ;;
*)
    echo "gen-config.sh: unknown registry kind '$kind' (plain, htpasswd, tls, htpasswd-tls, readonly, token)" >&2
    exit 2
    ;;
esac

cat >"$state/config.yml" <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $state/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
$readonly_block
http:
  addr: 127.0.0.1:$port
  secret: kvpush-fixtures-not-secret
  headers:
    X-Content-Type-Options: [nosniff]
$tls
$auth
YAML
echo "$kind" >"$state/kind"
