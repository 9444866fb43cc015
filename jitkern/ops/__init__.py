"""One module per primitive family: validate inputs, pick a config, get the kernel, launch."""
