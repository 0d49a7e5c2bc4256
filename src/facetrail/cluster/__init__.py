"""Running the pipeline on a Ray cluster: camera groups as actors, a pool of embedding actors, one delivery, resume
after a node dies.

Only the modules of the actors and the driver (``actors``, ``embedding``, ``nodes``, ``driver``) import Ray, and
only ``facetrail run`` with a ``cluster:`` section (or ``--ray``) imports them: a plain run never loads Ray.
"""
