"""Training methods, one module each; ``common.training.stage.METHODS`` maps a method name to its train function."""
