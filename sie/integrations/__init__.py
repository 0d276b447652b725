"""sie inside other engines. Each integration is its own module, imported only by those who use it, with its
engine as an optional dependency: ``sie.integrations.ray`` (``pip install 'sie[ray]'``)."""
