from services._runner import main

main(["payments"])
