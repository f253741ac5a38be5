from services._runner import main

main(["inventory"])
