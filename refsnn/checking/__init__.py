"""Checking gradients, refsnn's own and other implementations': finite differences (:mod:`.gradcheck`), case
files, diagnosis probes and the golden vectors (:mod:`.verification`), the peers' models read as refsnn networks
(:mod:`.peers`), independent PyTorch implementations (:mod:`.torch_golds`) and the official IDE code's training
step re-typed in PyTorch (:mod:`.torch_ide_port`)."""
