from locust import HttpUser, between, task


class CartsUser(HttpUser):
    wait_time = between(1, 2)

    @task
    def get_cart(self):
        self.client.get("/carts/1")

    @task
    def health(self):
        self.client.get("/health")
