"""The soak: the services and twins under steady load for a long time, their resources sampled for growth."""
