"""faust agents: each module is one stage of the topology. Nothing imports an agent; faust
discovers them (``autodiscover`` in :mod:`pinapp.topology.app`): ``engagement`` runs in ``pinapp worker``,
``archive`` in ``pinapp archiver``."""
