"""genlab: is this deep network overfitted, and why does it generalize anyway?"""
