"""Coordinator: blind combiner of per-department Paillier ciphertexts; never holds a decryption key."""  # noqa: E501
