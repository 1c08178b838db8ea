#!/usr/bin/env bash
# Writes the seed inputs of the supplied_files fuzz target from real openssl output: a CA, an
# intermediate, a leaf, their keys in every form pgssl reads (PKCS#8 plain and encrypted with PBKDF2
# and scrypt, PKCS#1, SEC1, legacy-encrypted PEM), a CRL, DER forms and a map file; each seed is up to
# three files joined by '#####' (cert, key, chain / CA, CRL, map). The passphrase is "pw", as the
# target's. Re-run after changing what the target reads, then `cargo fuzz cmin`.
#
#   fuzz/seeds/supplied_files.sh            # writes fuzz/corpus/supplied_files/seed-*
set -euo pipefail
out=$(cd "$(dirname "$0")/.." && pwd)/corpus/supplied_files
mkdir -p "$out"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
cd "$t"
cat > ca.cnf <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[leaf]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth, clientAuth
CNF
days=3650
openssl ecparam -name prime256v1 -genkey -noout -out ca.sec1.pem 2>/dev/null
openssl req -x509 -new -key ca.sec1.pem -subj "/CN=Seed Root" -days $days -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl ecparam -name prime256v1 -genkey -noout -out int.sec1.pem 2>/dev/null
openssl req -new -key int.sec1.pem -subj "/CN=Seed Intermediate" -out int.csr
openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.sec1.pem -CAcreateserial -days $days \
  -extfile ca.cnf -extensions ca -out int.pem 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out leaf.sec1.pem 2>/dev/null
openssl req -new -key leaf.sec1.pem -subj "/CN=localhost/O=Seed/emailAddress=a@example.com" -out leaf.csr
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.sec1.pem -CAcreateserial -days $days \
  -extfile ca.cnf -extensions leaf -out leaf.pem 2>/dev/null
openssl genrsa -out rsa.pem 2048 2>/dev/null
openssl req -x509 -new -key rsa.pem -subj "/CN=rsa.localhost" -days $days -out rsa.crt
openssl rsa -in rsa.pem -traditional -out rsa.pkcs1.pem 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in leaf.sec1.pem -out leaf.p8.pem
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:pw -in leaf.sec1.pem -out leaf.p8.pbkdf2.pem
openssl pkcs8 -topk8 -scrypt -passout pass:pw -in leaf.sec1.pem -out leaf.p8.scrypt.pem
openssl ec -in leaf.sec1.pem -aes256 -passout pass:pw -out leaf.legacy.pem 2>/dev/null
# A CRL by the CA that revokes the intermediate.
mkdir -p db && : > db/index.txt && echo 1000 > db/crlnumber
cat > crl.cnf <<'CNF'
[ca]
default_ca = seed
[seed]
database = db/index.txt
crlnumber = db/crlnumber
default_md = sha256
default_crl_days = 30
CNF
openssl ca -config crl.cnf -keyfile ca.sec1.pem -cert ca.pem -revoke int.pem 2>/dev/null
openssl ca -config crl.cnf -keyfile ca.sec1.pem -cert ca.pem -gencrl -out ca.crl 2>/dev/null
openssl crl -in ca.crl -outform DER -out ca.crl.der
openssl x509 -in ca.pem -outform DER -out ca.der
printf '# DN user\nCN=localhost,O=Seed tableau\nCN=rsa.localhost readonly\n' > map.txt

n=0
seed() { # files joined by #####
  n=$((n + 1))
  local first=1 f
  : > "$out/seed-$n"
  for f in "$@"; do
    [ $first -eq 1 ] || printf '#####' >> "$out/seed-$n"
    first=0
    cat "$f" >> "$out/seed-$n"
  done
}
cat int.pem ca.pem > chain.pem
cat leaf.pem int.pem > leaf+int.pem
for key in leaf.p8.pem leaf.p8.pbkdf2.pem leaf.p8.scrypt.pem leaf.sec1.pem leaf.legacy.pem; do
  seed leaf.pem "$key" chain.pem
done
seed leaf+int.pem leaf.p8.pem
seed rsa.crt rsa.pem
seed rsa.crt rsa.pkcs1.pem
seed leaf.pem rsa.pem chain.pem
seed ca.pem ca.crl map.txt
seed ca.der ca.crl.der map.txt
seed chain.pem ca.crl
seed ca.pem
seed ca.der
seed leaf.p8.scrypt.pem
seed map.txt
echo "wrote $n seeds to $out"
