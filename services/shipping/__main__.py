from services._runner import main

main(["shipping"])
