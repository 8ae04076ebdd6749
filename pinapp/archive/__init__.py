"""The S3 archive (Secor's role): every raw event persisted exactly once, by event hour.

``layout`` and ``records`` are the objects' names and format, ``buffer`` and ``writer`` the
cuts and their crash-safe intents, ``archiver`` the agent's side, ``verify``, ``listing`` and
``replay`` what ``pinapp archive`` runs.
"""
