"""The fingerprint network: architecture, augmentation, training and embedding."""
