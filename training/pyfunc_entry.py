"""MLflow "models from code" entry of the registered model ``noshow``: logged as the model's code, it
builds the pyfunc (training/pyfunc.py) when MLflow loads the model. Needs ClinicFlow installed."""

from mlflow.models import set_model

from training.pyfunc import NoShowPyfunc

set_model(NoShowPyfunc())
