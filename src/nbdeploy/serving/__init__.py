"""The serving process. It runs apart from the kernel (``python -m nbdeploy.serving DIR``);
the kernel talks to it over HTTP and never imports this package's web stack."""
