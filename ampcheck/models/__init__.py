"""Models: encoders, the cryo-EM decoder, the Variational Lookup Table, the MNIST VAE."""
