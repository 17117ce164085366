"""The served assistant: the pyfunc model, its code file, the model card and registration."""
