# The local services of the pipeline (flows/services.py), included by the Makefile:
#   make demo-services   start the Prefect server, the MLflow server (127.0.0.1) and a worker, deploy
#                        prefect.yaml; `make demo` does this and runs mimovl/full-pipeline
#   make stop            stop them by PID (runs/pids), the worker first
#   make services-status their PIDs (null: not running)
# Telemetry is off (DO_NOT_TRACK, PREFECT_SERVER_ANALYTICS_ENABLED: exported by the Makefile and set
# again by flows/services.py). Extra config overrides: make demo-services SERVICES_ARGS="orchestration.services.prefect_port=4300"
SERVICES_ARGS ?=

.PHONY: demo-services stop services-status

demo-services: setup
	$(PY) -m flows.services start $(SERVICES_ARGS)

stop:
	@if [ -x $(PY) ]; then $(PY) -m flows.services stop $(SERVICES_ARGS); else echo "no $(VENV): nothing to stop"; fi

services-status:
	@$(PY) -m flows.services status $(SERVICES_ARGS)
