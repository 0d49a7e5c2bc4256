"""Running the pipeline on a Ray cluster: camera groups as actors, one delivery, resume after a node dies.

Only ``actors.py`` and ``driver.py`` import Ray, and only ``facetrail run`` with a ``cluster:`` section (or
``--ray``) imports them: a plain run never loads Ray.
"""
