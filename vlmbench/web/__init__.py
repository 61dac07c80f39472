"""The labelling page: people label a dataset's states and state pairs for judging the judges."""
