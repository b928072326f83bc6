#!/usr/bin/env bash
# Rehearse every docs/real-data.md command on the stand-in (python -m bench.standin), with --quick: about
# 15 min on 2 CPU cores. Runs and reports go to $RH (default /tmp/risclip-rehearsal); numbers mean nothing.
set -euxo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
W=data/standin/ViT-B-16-random.pt
RH=${RH:-/tmp/risclip-rehearsal}
R="--data-root data/standin --tracking-uri sqlite:///$RH/mlflow.db --workdir $RH/runs --no-progress"
mkdir -p $RH
python -m bench.standin --out data/standin
python -m bench.ablate --preset paper-b --describe-preset > /dev/null
python -m bench.ablate --preset paper-b --pretrained $W $R --components adapters --seeds 0 --quick
python -m bench.ablate --preset paper-b --pretrained $W $R --device cpu --quick --seeds 0
python -m bench.report --tracking-uri sqlite:///$RH/mlflow.db --experiment risclip-paper-b-quick --name paper-b-ladder --out-dir $RH/reports
python -m bench.ablate --preset paper-b --pretrained $W $R --dataset refcoco --eval-split testA --quick --components adapters --seeds 0
python -m bench.ablate --preset paper-b --pretrained $W $R --dataset refcoco+ --eval-split testB --quick --components adapters --seeds 0
python -m bench.ablate --preset paper-b --pretrained $W $R --dataset refcocog-google --eval-split val --quick --components adapters --seeds 0
torchrun --standalone --nproc_per_node=2 -m bench.ablate --preset paper-b --pretrained $W $R --quick --components adapters,decoder --seeds 0 --force
python -m bench.ablate --preset paper-b --pretrained $W $R --protocol cris,lavt --quick --components adapters --seeds 0
python -m studies run tune --preset paper-b --pretrained $W --data-root data/standin --components adapters,cfe --trials 1 --quick --storage sqlite:///$RH/studies.db --tracking-uri sqlite:///$RH/mlflow.db --workdir $RH/runs
python -m studies report tune --preset paper-b --components adapters,cfe --quick --storage sqlite:///$RH/studies.db --tracking-uri sqlite:///$RH/mlflow.db --out-dir $RH/reports
RUN=$(RH=$RH python - <<'PY'
import os
from bench.spine.tracking import Tracker
t = Tracker(f"sqlite:///{os.environ['RH']}/mlflow.db", "risclip-paper-b-quick")
print(next(r.info.run_id for r in t.runs({"kind": "variant"}) if r.data.tags.get("checkpoint")))
PY
)
IMG=$(ls data/standin/images/train2014/*.png | head -1)
python -m bench.predict --run $RUN --tracking-uri sqlite:///$RH/mlflow.db --image $IMG --text "the red square on the left" --out $RH/mask.png --overlay $RH/overlay.png
CK=$(ls $RH/runs/*/model.pt | head -1)
python -m risclip.predict --checkpoint $CK --image $IMG --text "the red square" --text "the blue circle" --out $RH/m.png
echo REHEARSAL-OK
