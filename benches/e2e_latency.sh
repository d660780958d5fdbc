#!/usr/bin/env bash
# End-to-end latency and peak memory of one study through `penumbra serve`.
#
# Sends a 16-slice x 40-frame 512x512 phantom CTP study with DCMTK storescu over loopback. It
# measures the time from the end of the transfer (the last instance acknowledged) until the
# destination storescp has received the SEG, SR and summary image. It also reports the daemon's
# peak resident memory (VmHWM). Usage: benches/e2e_latency.sh [PENUMBRA_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/penumbra}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
scp=$(free_port); dest=$(free_port); qa=$(free_port); metrics=$(free_port)
mkdir -p "$work/received"
cat > "$work/pipeline.yaml" <<YAML
data_dir: $work/var
ingest:
  scp: { listen: "127.0.0.1:$scp" }
  watch: { folders: [$work/incoming] }
  study_quiet_s: 20
model: { path: $PWD/models/ctp-resunet-v1, tta: true }
export:
  destinations: [ { ae_title: STORESCP, address: "127.0.0.1:$dest" } ]
qa: { listen: "127.0.0.1:$qa" }
metrics: { listen: "127.0.0.1:$metrics" }
YAML

"$bin" phantom --out "$work/study" --seed 5 --matrix 512 --slices 16 --frames 40 --interval 1.5 > /dev/null
storescp -aet STORESCP --output-directory "$work/received" "$dest" > /dev/null 2>&1 &
"$bin" serve --config "$work/pipeline.yaml" 2> "$work/serve.log" &
daemon=$!
until curl -sf "127.0.0.1:$metrics/readyz" > /dev/null; do sleep 0.2; done

start=$(date +%s.%N)
TCP_NODELAY=1 storescu -aec PENUMBRA +sd +r 127.0.0.1 "$scp" "$work/study/dicom"
sent=$(date +%s.%N)
until [ "$(ls "$work/received" | wc -l)" -ge 3 ]; do sleep 0.1; done
done_at=$(date +%s.%N)
peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")

python3 - "$start" "$sent" "$done_at" "$peak_kib" <<'PY'
import json, sys
start, sent, done, peak = map(float, sys.argv[1:])
print(json.dumps({
    "instances": 640,
    "transfer_s": round(sent - start, 2),
    "last_instance_to_outputs_s": round(done - sent, 2),
    "peak_rss_mib": round(peak / 1024, 1),
}))
PY
