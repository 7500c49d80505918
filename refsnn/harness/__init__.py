"""Training and measuring, for all four algorithms side by side: recipes (:mod:`.recipes`), small seeded test
problems (:mod:`.problems`), datasets (:mod:`.datasets`), optimizers (:mod:`.optim`), the training loop
(:mod:`.train`), the paired benchmarks (:mod:`.benchmarks`) and many-run experiments (:mod:`.experiments`)."""
