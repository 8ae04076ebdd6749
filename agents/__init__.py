"""faust agents: each module is one stage of the topology. Nothing imports an agent;
faust discovers them (``autodiscover=["tables", "agents"]`` in :mod:`pinapp.app`)."""
