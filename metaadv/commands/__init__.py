"""Sub-commands of the ``metaadv`` CLI (one module each: ``add_parser`` and ``run``)."""
