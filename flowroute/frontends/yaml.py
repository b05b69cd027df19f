def load(path):
    raise NotImplementedError

def loads(text, source=None):
    raise NotImplementedError
