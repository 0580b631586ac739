"""``python -m nbdeploy.retraining FOLDER/retrain``: the process of one retraining job."""

import sys

from nbdeploy.retraining.runner import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m nbdeploy.retraining DEPLOYMENT_FOLDER/retrain")
    sys.exit(main(sys.argv[1]))
