"""Department node: keeps a department's records local and answers encrypted, policy-checked contributions."""  # noqa: E501
