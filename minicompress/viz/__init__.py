"""Pictures of what each technique does (one module per technique), drawn with matplotlib."""
