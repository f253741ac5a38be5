from services._runner import main

main(["orders"])
