"""Which papers go in each subscriber's digest, and when: the window of new papers and its
ranking (select.py), when the next digest is due (due.py), and the embedding vectors no window will
read again (forget.py)."""
