"""TaskFlow decorators of the Noxus provider (``@task.noxus``)."""
