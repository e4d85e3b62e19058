"""The building blocks of localization and clustering that methods compose: TALL, EMR and
ClAMU's masks (``masks``, ``emr_merging``), task clusters (``clustering``, with the task vectors' cosine affinity in ``affinity``) and the one validation
search every method's hyperparameters go through (``selection``). Below
:mod:`clamu_helpers.methods`, above :mod:`clamu_helpers.training`."""
