"""Validation circuits (an iParapheur in the room): a stored document goes through visa,
opinion and signature steps, then to the archive with its receipt and, when signed, a seal.

``spec`` reads what agents and models say; ``store`` is the persisted state machine;
``engine`` makes the transitions and what follows them; ``proof`` writes the receipt and
the seal; ``commands`` are the ``!circuit`` commands.
"""
