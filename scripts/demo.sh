#!/usr/bin/env bash
# The main job on a small example model: sign it, tamper with it (verification fails and names the
# file), restore it (verification passes). Sets everything up first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
WV="$PWD/.venv/bin/weightvault"
PY="$PWD/.venv/bin/python"

work="$(mktemp -d "${TMPDIR:-/tmp}/weightvault-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
model="$work/tiny-model"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "1. Create a small example model in $model"
"$PY" - "$model" <<'PY'
import json, struct, sys, random
from pathlib import Path
root = Path(sys.argv[1]); root.mkdir(parents=True)
rng = random.Random(2024)
tensors = {"embed.weight": (64, 32), "layer0.weight": (32, 32), "head.weight": (32, 64)}
header, blobs, offset = {}, [], 0
for name, shape in tensors.items():
    data = b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(shape[0] * shape[1]))
    header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data); offset += len(data)
head = json.dumps(header).encode()
(root / "model.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
(root / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 32, "vocab_size": 64}, indent=2))
(root / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(64)}}))
(root / "README.md").write_text("# tiny-model\nAn example model made by scripts/demo.sh.\n")
PY
ls -l "$model"

step "2. Generate an EC P-256 key pair"
"$PY" - "$work" <<'PY'
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
out = Path(sys.argv[1])
(out / "signing-key.pem").write_bytes(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
(out / "signing-key.pub").write_bytes(key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
PY
echo "private key: $work/signing-key.pem, public key: $work/signing-key.pub"

step "3. Sign the model (writes $model/model.sig)"
show "$WV" sign "$model" --key "$work/signing-key.pem"

step "4. Print the model's digests (what the signature pins)"
show "$WV" digest "$model"

step "5. Verify the untouched model"
show "$WV" verify "$model" --key "$work/signing-key.pub"

step "6. Tamper: flip one bit in the weights, then verify again (must fail with exit 1)"
cp "$model/model.safetensors" "$work/original.safetensors"
"$PY" -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-100] ^= 1; open(p, "wb").write(b)' \
  "$model/model.safetensors"
set +e
show "$WV" verify "$model" --key "$work/signing-key.pub"
status=$?
set -e
echo "exit code: $status"
if [ "$status" -ne 1 ]; then
  echo "demo: expected exit code 1 for a tampered model" >&2
  exit 1
fi

step "7. Restore the original weights and verify again (must pass)"
cp "$work/original.safetensors" "$model/model.safetensors"
show "$WV" verify "$model" --key "$work/signing-key.pub"
echo "exit code: $?"

step "Done: signing and verification work; tampering was caught and named."
