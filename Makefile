# make demo: adversarially train (RP-PGD++) the demo PSPNet on the generated dataset, then evaluate it clean and
# under six attacks, and under SEA with SEA's centre-crop protocol (about 10 minutes on 2 CPU cores).
# make test: the fast tests; make test-slow: multi-process and end-to-end tests (CI runs both).
PY := .venv/bin/python
PYTHON ?= python3

.PHONY: demo test test-slow venv clean-demo

venv: .venv/.installed

.venv/.installed: requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

.venv/.test-installed: requirements-test.txt .venv/.installed
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

demo:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory venv && \
	PYTHON=$(PY) NPROC=1 sh tool_train/demo/psp_train_sat.sh && \
	PYTHON=$(PY) NPROC=1 sh tool_test/demo/psp_test_sat.sh && \
	PYTHON=$(PY) NPROC=1 sh tool_test/demo/psp_test_sat_sea.sh && \
	echo "make demo finished in $$(( $$(date +%s) - start )) s" && \
	for r in $$(ls -dt exp/demo/demo_pspnet18_sat/result/val_last_full*/ | head -1) \
	         $$(ls -dt exp/demo/demo_pspnet18_sat/result/val_last_center*/ | head -1); do \
	    echo "report: $${r}report.md$$([ -d $${r}panels ] && echo "  panels: $${r}panels/")$$([ -d $${r}regions ] && echo "  region strips: $${r}regions/")"; done

test: .venv/.test-installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

test-slow: .venv/.test-installed
	$(PY) -m pytest -q -m slow

clean-demo:
	rm -rf exp/demo data/demo
