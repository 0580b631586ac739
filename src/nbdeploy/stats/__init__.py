"""Statistics of data shared by validation and monitoring (numpy, scipy and pandas only):
training-data profiles (:mod:`.profile`) and drift against them (:mod:`.drift`).
Importing this package imports neither; import the module you need."""
