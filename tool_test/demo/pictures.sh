#!/bin/sh
# The README's pictures (docs/*.png) from the demo: one panel and one RP-PGD region strip of make demo's evaluation
# of the adversarially trained model, and the convergence plot of a short study of that model.
# make demo && sh tool_test/demo/pictures.sh          (about 5 minutes on 2 CPU cores after make demo)
set -eu
cd "$(dirname "$0")/../.."
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
result=$(ls -dt exp/demo/demo_pspnet18_sat/result/val_last_full*/ | head -1)
mkdir -p docs
cp "$result"panels/rppgd++/00000_*.png docs/demo_panel_rppgd++.png
cp "$result"regions/rppgd++_00000_*.png docs/demo_regions_rppgd++.png
"$PY" tool_test/convergence.py --config config/demo/demo_pspnet18_sat.yaml --images 8 --steps 1,2,3,5,10 \
    --eps 0.1 --alpha 0.025 --apgd-steps 20 --only bim,pgd,segpgd,cospgd,rppgd,rppgd++,apgd-ce
study=$(ls -dt exp/demo/demo_pspnet18_sat/result/convergence*/ | head -1)
cp "$study"convergence.png docs/demo_convergence.png
echo "wrote docs/demo_panel_rppgd++.png, docs/demo_regions_rppgd++.png and docs/demo_convergence.png"
