"""(stage package; its docstring comes in its own commit)"""
