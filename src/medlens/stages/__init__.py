"""The stages of the flow as functions of run directories: plan, train, evaluate, predict,
explain, analyse and report. Each reads what earlier stages wrote through a
:class:`~medlens.run.Run` and writes its own files beside them; ``medlens.api`` re-exports them.
"""
