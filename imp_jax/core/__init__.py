"""The science as pure functions: models, the train step and loop, optimizers, metrics,
pruning rules and the best pruned model. No files, no configs."""
