"""Business rules of a sale, a return, the catalogue and loyalty. Pure: no I/O, no clock."""
