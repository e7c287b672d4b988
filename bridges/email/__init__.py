"""The email bridge: service mailboxes in rooms, for partners and citizens not on Matrix.

``smtp`` receives (SMTP and LMTP, stored before 250), ``store`` keeps, ``message`` reads an
email as the room shows it, ``ghosts`` makes each correspondent a ghost user of the
bridge's appservice, ``bot`` (@courriel) gives rooms their addresses and delivers; ``main``
is the process ``maillage up`` starts.
"""
